"""Helpers of the tests alone, importable as `support` (pytest's pythonpath has tests/ on it).

What the benchmarks and the demo share with the tests lives in audit_devtools (scripts/devtools/).
"""

# The lab the tests run on when AUDIT_LAB is not set (tests/conftest.py): the test session's own,
# which it may remove and remake; any other lab is the user's.
SESSION_LAB = "lab-test"
# The lab's app hosts (inventories/lab/hosts.yml: audit_api and audit_worker), in order.
APP_HOSTS = ["app1", "app2"]
