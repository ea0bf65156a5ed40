"""The REST API: ``create_app(Backend(...))`` (FastAPI; imported by the CLI's ``serve`` only)."""

from genaccel.api.app import create_app
from genaccel.service import Backend

__all__ = ["Backend", "create_app"]
