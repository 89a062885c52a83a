"""One router per resource: audit events, health and metrics."""
