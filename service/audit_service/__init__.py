"""Audit Log service: multi-tenant audit-event API and worker."""

__version__ = "0.1.0"
