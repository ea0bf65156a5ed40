"""What the web UI does with jobs: the job service (``genaccel.service``) as the UI's controls
use it. Webhooks and idempotency keys are API-only and left out; the API's per-key rate limit is
not applied (the UI polls)."""

from __future__ import annotations

from typing import Any

from genaccel.errors import InvalidRequest
from genaccel.service import JobService
from genaccel.spec import Job


class UIJobs(JobService):
    """The job service with the UI's shapes: ``submit`` returns the job, ``history`` a list."""

    def submit(self, flat: dict[str, Any], owner: str, *, idempotency_key: str | None = None,  # type: ignore[override]
               job_id: str | None = None, upload: str | None = None) -> Job:
        """Validate and queue a flat request (the REST body's keys); ``upload`` is the path of an
        init image the browser uploaded through Gradio (checked by Gradio to lie in its upload
        folder), which replaces ``flat["init_image"]``; a path inside ``flat`` is refused."""
        flat = {k: v for k, v in flat.items() if k != "webhook"}
        return super().submit(flat, owner, idempotency_key=idempotency_key, job_id=job_id, upload=upload)[0]

    def history(self, owner: str, limit: int = 50) -> list[Job]:
        """``owner``'s most recent jobs, newest first."""
        return self.list(owner, limit=limit).jobs


def optional_number(field: str, text: str | float | None, *, integer: bool = False) -> float | int | None:
    """A number typed in a text box; empty means "the default". Raises ``InvalidRequest``."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidRequest(field, text, "is not a number", "type a number or leave it empty") from None
    if not integer:
        return value
    if not value.is_integer():
        raise InvalidRequest(field, text, "must be a whole number", f"type {round(value)} or leave it empty")
    return int(value)


def parameters(job: Job) -> dict[str, Any]:
    """The resolved request of ``job`` as flat REST keys (what "re-run" submits), without server paths."""
    flat = job.request.flat()
    if "init_image" in flat:
        flat["init_image"] = "uploaded"
    return {"job": job.id, **flat}
