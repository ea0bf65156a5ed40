"""The REST API: ``create_app(Backend(...))`` (FastAPI; imported by the CLI's ``serve`` only)."""

from genaccel.api.app import Backend, create_app

__all__ = ["Backend", "create_app"]
