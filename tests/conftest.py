"""The test session's own lab: `lab-test` (containers audit-lab-test-*, network audit-lab-test,
nginx and Prometheus on loopback ports 100 above the user's lab), from the same inventory as the
user's lab (inventories/lab), so that `make test` never converges over, or removes, the lab that
`make demo` made. Set AUDIT_LAB (and AUDIT_LAB_PORT_OFFSET) to run the tests on another lab.

This runs before any test module imports audit_devtools.lab, which reads them once.
"""

import os

from support import SESSION_LAB

os.environ.setdefault("AUDIT_LAB", SESSION_LAB)
os.environ.setdefault("AUDIT_LAB_PORT_OFFSET", "100")
