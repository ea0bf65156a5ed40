"""What the web UI does with jobs: resolve the caller's key to an owner, submit, cancel, list.

Ownership, the queued-job cap, init images and queueing are the REST API's own
(``genaccel.api.jobs.Jobs``); webhooks and idempotency keys are API-only and left out. The API's
per-key rate limit is not applied: the UI polls.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from genaccel.api.app import Backend
from genaccel.api.jobs import Jobs
from genaccel.api.uploads import save_data_url
from genaccel.errors import GenAccelError, InvalidRequest
from genaccel.spec import Job, JobRequest, new_seed


class QueueFull(GenAccelError):
    code = "rate_limited"
    http_status = 429


class UIJobs:
    """The job operations behind every UI control, scoped to one owner at a time."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.settings = backend.settings
        self.store = backend.store
        self.jobs = Jobs(backend)
        self.keys = self.jobs.keys

    def owner(self, key: str | None) -> str:
        """The owner id of ``key``; raises ``AuthError`` when keys are on and it is missing or unknown."""
        key = (key or "").strip()
        return self.keys.owner(f"Bearer {key}" if key else None)

    def scope(self, owner: str) -> str | None:
        """The store's owner filter: each key sees its own jobs; without keys there is one user."""
        return self.jobs.scope(owner)

    def submit(self, flat: dict[str, Any], owner: str, *, upload: str | None = None) -> Job:
        """Validate and queue a flat request (the REST body's keys).

        Args:
            flat: as over REST: an ``init_image`` must be a ``data:image/...;base64,`` URL, never a path.
            owner: the caller's owner id (``owner(key)``).
            upload: the path of an init image the browser uploaded through Gradio (checked by
                Gradio to lie in its upload folder); it replaces ``flat["init_image"]``.
        """
        self._check_cap(owner)
        flat = {k: v for k, v in flat.items() if v is not None}
        folder, limit = self.settings.home / "uploads" / owner, self.settings.limits.init_image_max_bytes
        if upload:
            flat["init_image"] = str(self._store_upload(upload, folder, limit))
        else:
            flat = self.jobs.store_init_image(flat, owner)
        return self.jobs.enqueue(JobRequest.from_flat(flat), owner)

    def rerun(self, job: Job, owner: str, *, seed: int | None = None) -> Job:
        """Queue ``job``'s request again: with its own seed, or ``seed``."""
        self._check_cap(owner)
        params = job.request.params.model_copy(update={"seed": job.request.params.seed if seed is None else seed})
        return self.jobs.enqueue(job.request.model_copy(update={"params": params}), owner)

    def vary(self, job: Job, owner: str) -> Job:
        """Queue ``job``'s request with a fresh random seed."""
        return self.rerun(job, owner, seed=new_seed())

    def get(self, job_id: str, owner: str) -> Job:
        """One of ``owner``'s jobs (another owner's job is reported as missing)."""
        if not job_id:
            raise InvalidRequest("job", job_id, "no job selected", "submit a job or pick one in the history")
        return self.jobs.own(job_id, owner)

    def cancel(self, job_id: str, owner: str) -> Job:
        self.get(job_id, owner)
        return self.store.cancel(job_id)

    def history(self, owner: str, limit: int = 50) -> list[Job]:
        """``owner``'s most recent jobs, newest first."""
        return self.store.list_jobs(limit=limit, owner=self.scope(owner)).jobs

    def queue_position(self, job: Job) -> int | None:
        return self.jobs.queue_position(job)

    def _check_cap(self, owner: str) -> None:
        full = self.jobs.over_cap(owner)
        if full:
            raise QueueFull(f"{full[0]} jobs already queued, the cap is {full[1]}; fix: wait for some to finish "
                            "or cancel them in the history")

    @staticmethod
    def _store_upload(path_text: str, folder: Path, limit: int) -> Path:
        """Copy an uploaded image into ``folder`` with the API's checks (size, format)."""
        path = Path(path_text)
        if not path.is_file():
            raise InvalidRequest("init_image", path.name, "the upload is gone", "upload the image again")
        size = path.stat().st_size
        if size > limit:
            raise InvalidRequest("init_image", f"{size} bytes", f"the limit is {limit} bytes", "upload a smaller image")
        return save_data_url("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), folder, limit)


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
