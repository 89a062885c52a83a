# Entry points named in the README. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV  := .venv/bin

.PHONY: demo test deps lint test-unit test-service bench clean

demo: deps                     ## run the service on real components locally and ingest sample events
	$(VENV)/python scripts/demo_local.py $(ARGS)

test: deps lint                ## everything CI runs
	$(VENV)/pytest -q -p no:cacheprovider

deps:
	@scripts/deps.sh

lint: deps
	$(VENV)/ruff check service tests bench scripts
	$(VENV)/ruff format --check service tests bench scripts

test-unit: deps                ## pure-logic tests only (seconds)
	$(VENV)/pytest -q tests/unit

test-service: deps             ## the service against real PostgreSQL, Redis and NATS
	$(VENV)/pytest -q tests/service

bench: deps                    ## print the ingest and query figures (see docs/benchmarks.md)
	$(VENV)/python bench/run_all.py

clean:
	rm -rf .venv reports .pytest_cache .ruff_cache
