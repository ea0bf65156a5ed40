"""Job operations shared by the REST API and the web UI: ownership, the queued-job cap, init
images arriving as data URLs, and queueing a request (validate, record, dispatch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genaccel.api.auth import KeyRing
from genaccel.api.uploads import save_data_url
from genaccel.errors import JobNotFound
from genaccel.spec import Job, JobRequest
from pipelines.prepare import prepare_request

if TYPE_CHECKING:
    from genaccel.api.app import Backend


class Jobs:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.settings, self.store = backend.settings, backend.store
        self.keys = KeyRing(backend.settings.api_keys)

    def scope(self, owner: str) -> str | None:
        """The owner filter: each key sees its own jobs; without keys there is one user."""
        return owner if self.keys.enabled else None

    def own(self, job_id: str, owner: str) -> Job:
        """One of ``owner``'s jobs; another owner's job is reported as missing."""
        job = self.store.get(job_id)
        if self.keys.enabled and job.owner != owner:
            raise JobNotFound(job_id)
        return job

    def over_cap(self, owner: str) -> tuple[int, int] | None:
        """``(queued, cap)`` when ``owner`` already has the most queued jobs allowed, else ``None``."""
        queued = self.store.count(state="queued", owner=self.scope(owner))
        cap = self.settings.max_queued_per_key
        return (queued, cap) if queued >= cap else None

    def store_init_image(self, flat: dict[str, Any], owner: str) -> dict[str, Any]:
        """``flat`` with its ``init_image`` data URL checked and saved under ``home/uploads/OWNER``."""
        if not flat.get("init_image"):
            return flat
        folder = self.settings.home / "uploads" / owner
        path = save_data_url(str(flat["init_image"]), folder, self.settings.limits.init_image_max_bytes)
        return {**flat, "init_image": str(path)}

    def enqueue(self, request: JobRequest, owner: str, *, job_id: str | None = None,
                metadata: dict[str, Any] | None = None) -> Job:
        """Validate and resolve ``request``, record it for ``owner`` and hand it to the dispatcher."""
        resolved, _ = prepare_request(request, self.backend.registry, self.settings)
        job = self.store.create(resolved, job_id=job_id, owner=owner)
        if metadata:
            self.store.update_metadata(job.id, metadata)
        self.backend.dispatcher.submit(job.id)
        return job

    def queue_position(self, job: Job) -> int | None:
        return self.store.queue_position(job.id) if job.state == "queued" else None
