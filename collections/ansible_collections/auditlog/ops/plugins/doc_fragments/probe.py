# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).


class ModuleDocFragment:
    # The attributes of the modules that only read a data store (pg_diagnostics,
    # redis_diagnostics, nats_jetstream), beside ansible.builtin.action_common_attributes.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode changes nothing it does.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
