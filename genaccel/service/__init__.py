"""The job service shared by the REST API, the web UI and the CLI (``JobService``), the backend
it runs on (``Backend``), API keys and rate limits (``auth``) and uploaded images (``uploads``).
It depends on ``pipelines`` and the core, never on ``genaccel.api``, ``ui`` or ``workers``."""

from genaccel.service.auth import AuthError
from genaccel.service.jobs import Backend, JobService, TooManyRequests

__all__ = ["AuthError", "Backend", "JobService", "TooManyRequests"]
