#!/usr/bin/env bash
# Runs every test (`make test`): the lab tests and the others side by side, in two pytest runs.
# The lab tests leave a quarter of the machine idle while they wait on the containers (apt, systemd,
# rolling restarts), and the unit, module and service tests need no lab: those run beside them at a
# lower CPU priority (nice), so that they fill the idle time rather than slow the lab, the longer of
# the two. The lab run prints as it goes; the other run's output is kept in
# .cache/test-logs/others.log and printed when both are done. Fails when either fails.
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=(.venv/bin/pytest -q -p no:cacheprovider)
mkdir -p .cache/test-logs
others_log=.cache/test-logs/others.log

nice -n 10 "${pytest[@]}" --durations=10 -m "not lab" >"$others_log" 2>&1 &
others=$!
trap 'kill "$others" 2>/dev/null' EXIT INT TERM

echo "tests: the lab tests here; the others beside them (their output: $others_log, shown at the end)"
"${pytest[@]}" --durations=25 -m lab
lab_rc=$?
wait "$others"
others_rc=$?
trap - EXIT INT TERM

echo
echo "tests: lab tests exit code $lab_rc, other tests exit code $others_rc; the other tests' output ($others_log):"
cat "$others_log"
[ "$lab_rc" -eq 0 ] && [ "$others_rc" -eq 0 ]
