# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Action plugin of auditlog.ops.pg_tenant_copy: runs the module, adds each finding's host and gathers the
findings of the run (plugins/plugin_utils/findings_action.py)."""

from __future__ import annotations

from ansible_collections.auditlog.ops.plugins.plugin_utils.findings_action import ActionModule  # noqa: F401
