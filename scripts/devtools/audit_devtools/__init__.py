"""Development tools shared by the tests, the benchmarks and the demo (never deployed):

- `stack`: real PostgreSQL, Redis and NATS JetStream on loopback, and the service's processes;
- `lab`: the local lab of systemd containers and the Ansible runs against it.

scripts/deps.sh installs this package editable into the project's venv; it is a distribution of
its own (scripts/devtools/pyproject.toml) so that the service's wheel never carries it.
"""

from pathlib import Path

# The checkout this package lies in (scripts/devtools/audit_devtools/): both modules use its
# playbooks, roles and collection, so only an editable install works.
ROOT = Path(__file__).resolve().parents[3]
if not (ROOT / "ansible.cfg").is_file():
    raise ImportError(
        f"audit_devtools must be installed editable from the checkout (scripts/deps.sh): {ROOT}"
    )
