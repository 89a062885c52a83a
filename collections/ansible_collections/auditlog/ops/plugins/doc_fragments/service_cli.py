# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).


class ModuleDocFragment:
    # The options of the modules that run the service's own CLI as one of its units runs it
    # (module_utils/service_cli.py: retention, chain_verify). Each module says which unit's
    # environment files it takes (env_files), as those differ.
    DOCUMENTATION = r"""
options:
  command:
    description: The service's console script.
    type: path
    default: /opt/audit-service/bin/audit-service
  run_as:
    description:
      - The user the command runs as (C(runuser)), as the unit's C(User=). The module itself runs
        as root, which alone may read the environment files.
    type: str
    default: audit-service
"""
