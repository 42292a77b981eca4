"""Kept for deployments that serve `uvicorn --factory backend.main:create_app`: the
application now lives in `backend.app`."""

from backend.app import create_app

__all__ = ["create_app"]
