#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine, once: the servers from the
# Debian archive and a virtualenv with the project and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v nats-server >/dev/null || need_pkgs+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v runuser >/dev/null || need_pkgs+=(util-linux)
# tc shapes a lab container's link from the Docker host (the network-latency runbook's fault).
command -v tc >/dev/null || need_pkgs+=(iproute2)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
# auditlog.ops.pg_diagnostics runs under the targets' /usr/bin/python3 with Debian's psycopg2.
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null || need_pkgs+=(python3-psycopg2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "deps: installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
# The tests run their own servers on free ports, so the machine's own instances (Debian starts
# one on install) are left alone: stopping them could stop a service someone relies on.

# promtool (checks and unit-tests the alerting rules) from Debian's prometheus package, unpacked
# into .cache/tools: installing the package would start a Prometheus on this machine.
if [ ! -x .cache/tools/promtool ]; then
    echo "deps: unpacking promtool from Debian's prometheus package"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; })
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p .cache/tools
    cp "$tmp/x/usr/bin/promtool" .cache/tools/promtool
    rm -rf "$tmp"
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-lock.txt -nt "$stamp" ] \
    || [ scripts/devtools/pyproject.toml -nt "$stamp" ]; then
    echo "deps: building .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    # scripts/devtools: the lab runner and local stack the tests, benchmarks and demo import.
    .venv/bin/pip install -q -c requirements-lock.txt -e '.[test,ops]' -e scripts/devtools
    touch "$stamp"
fi
