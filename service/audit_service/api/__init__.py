"""The HTTP API (DESIGN.md section 3, "HTTP contract"): `create_app` is what uvicorn serves
(`audit_service.api:create_app`)."""

from .main import create_app

__all__ = ["create_app"]
