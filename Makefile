# Entry points named in the README. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV  := .venv/bin

.PHONY: demo test deps lint sanity test-unit test-service test-lab molecule lab-up lab-down bench bench-fleet clean

demo: deps                     ## the stack deployed in the local lab, sample events, a health summary
	$(VENV)/python scripts/demo.py $(ARGS)

test: deps lint sanity         ## everything CI runs: the lab tests and the others side by side
	scripts/run_tests.sh

deps:
	@scripts/deps.sh

lint: deps
	$(VENV)/ruff check service tests bench scripts collections molecule roles
	$(VENV)/ruff format --check service tests bench scripts collections molecule roles
	PATH=$(CURDIR)/$(VENV):$$PATH $(VENV)/ansible-lint -q playbooks/ roles/ inventories/ collections/ molecule/

sanity: deps                   ## ansible-test sanity (validate-modules, ansible-doc, ...) and a build of the collection
	@scripts/sanity.sh

test-unit: deps                ## pure-logic tests only (seconds)
	$(VENV)/pytest -q tests/unit

test-service: deps             ## the service against real PostgreSQL, Redis and NATS
	$(VENV)/pytest -q tests/service

test-lab: deps                 ## the lab of systemd containers (made once, removed after; LAB_KEEP=1 keeps it)
	$(VENV)/pytest -q tests/lab

molecule: deps                 ## molecule's default scenario alone: create, converge, idempotence, check, verify, destroy
	PATH=$(CURDIR)/$(VENV):$$PATH $(VENV)/molecule test

lab-up: deps                   ## create the lab (Docker Engine and base images too, when missing)
	PATH=$(CURDIR)/$(VENV):$$PATH $(VENV)/ansible-playbook playbooks/lab.yml

lab-down: deps                 ## remove the lab's containers and network (the base images stay)
	PATH=$(CURDIR)/$(VENV):$$PATH $(VENV)/ansible-playbook playbooks/lab.yml -e lab_state=absent

bench: deps                    ## print the ingest and query figures (see docs/benchmarks.md)
	$(VENV)/python bench/run_all.py

bench-fleet: deps              ## fleet_health.yml on a 20-host lab of its own against ping (docs/benchmarks.md)
	$(VENV)/python bench/fleet_health.py $(ARGS)

clean:
	rm -rf .venv reports .pytest_cache .ruff_cache
