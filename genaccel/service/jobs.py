"""The job service: every operation on jobs that the REST API, the web UI and the CLI offer, in
one place: submit (validation, idempotency, ownership, the queued-job cap, init images, webhooks),
get, list, cancel, re-run, vary, and artifact lookup. Callers pass an owner id (``owner(...)``);
with API keys on, each owner sees only its own jobs and another's are reported as missing."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genaccel.artifacts import artifact_file, artifact_locations
from genaccel.artifacts.storage import S3_SCHEME, ArtifactStore, artifact_store
from genaccel.errors import GenAccelError, InvalidRequest, JobNotFound, JobStateConflict
from genaccel.queue.base import Dispatcher
from genaccel.service.auth import KeyRing, RateLimiter, retry_after
from genaccel.service.uploads import save_data_url
from genaccel.settings import Settings
from genaccel.spec import Artifact, Job, JobRequest, JobState, Modality, new_seed
from genaccel.store.base import JobPage, Store
from genaccel.webhooks import check_url
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry, weights_digest


@dataclass
class Backend:
    """What the service runs on: ``genaccel serve`` builds one per shape."""

    settings: Settings
    store: Store
    dispatcher: Dispatcher
    registry: ModelRegistry


@dataclass
class StoredFile:
    """An artifact file as the service hands it out: a local path, or chunks from the object store."""

    name: str
    location: str
    media_type: str
    store: ArtifactStore

    @property
    def local_path(self) -> Path | None:
        return None if self.location.startswith(S3_SCHEME) else Path(self.location)

    def chunks(self) -> Iterator[bytes]:
        return self.store.open(self.location)


class TooManyRequests(GenAccelError):
    """A rate limit or the queued-job cap (HTTP 429 with ``Retry-After``)."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_s = retry_s

    @property
    def retry_after(self) -> str:
        return retry_after(self.retry_s)


class JobService:
    """Job operations over one ``Backend``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.settings, self.store, self.registry = backend.settings, backend.store, backend.registry
        self.keys = KeyRing(backend.settings.api_keys)
        self.artifacts = artifact_store(backend.settings)
        self.limiter = RateLimiter(backend.settings.rate_limit_per_min)

    # -- who is asking ---------------------------------------------------------------------

    def owner(self, authorization: str | None, *, spend: bool = False) -> str:
        """The caller's owner id from an ``Authorization`` header value (``Bearer KEY``) or a bare
        key; raises ``AuthError`` when keys are on and it is missing or unknown. ``spend`` takes
        one request from the caller's rate limit (``TooManyRequests`` when it is used up)."""
        text = (authorization or "").strip()
        if text and " " not in text:
            text = f"Bearer {text}"
        owner = self.keys.owner(text or None)
        if spend:
            wait = self.limiter.take(owner)
            if wait:
                raise TooManyRequests(f"more than {self.settings.rate_limit_per_min} requests a minute; "
                                      f"fix: retry after {retry_after(wait)} s", wait)
        return owner

    def scope(self, owner: str) -> str | None:
        """The store's owner filter: each key sees its own jobs; without keys there is one user."""
        return owner if self.keys.enabled else None

    # -- reading ---------------------------------------------------------------------------

    def get(self, job_id: str, owner: str) -> Job:
        """One of ``owner``'s jobs; another owner's job is reported as missing."""
        if not job_id:
            raise InvalidRequest("job", job_id, "no job selected", "submit a job or pick one in the history")
        job = self.store.get(job_id)
        if self.keys.enabled and job.owner != owner:
            raise JobNotFound(job_id)
        return job

    def list(self, owner: str, *, state: JobState | None = None, modality: Modality | None = None,
             limit: int = 50, cursor: str | None = None) -> JobPage:
        """``owner``'s jobs, newest first, a page at a time."""
        return self.store.list_jobs(state=state, modality=modality, limit=limit, cursor=cursor,
                                    owner=self.scope(owner))

    def queue_position(self, job: Job) -> int | None:
        return self.store.queue_position(job.id) if job.state == "queued" else None

    def artifact(self, job_id: str, name: str, owner: str) -> StoredFile:
        """One output file of one of ``owner``'s jobs, its sidecar or poster, looked up by name in
        the job's record (never as a path)."""
        return self.file(self.get(job_id, owner), name)

    def file(self, job: Job, name: str) -> StoredFile:
        """The file ``name`` of ``job`` (the caller has checked who may see it)."""
        found = artifact_file(job.artifacts, name)
        if found is None or not self.artifacts.exists(found[0]):
            raise JobNotFound(f"{job.id}/{name}")
        return StoredFile(name, found[0], found[1], self.artifacts)

    # -- writing ---------------------------------------------------------------------------

    def submit(self, flat: dict[str, Any], owner: str, *, idempotency_key: str | None = None,
               job_id: str | None = None, upload: str | None = None,
               metadata: dict[str, Any] | None = None) -> tuple[Job, bool]:
        """Validate and queue a flat request (a batch line's keys, a REST body); returns the job
        and whether it is new. A repeated ``idempotency_key`` or ``job_id`` returns the first job.

        Args:
            flat: the request; an ``init_image`` must be a ``data:image/...;base64,`` URL, never a
                path; ``webhook`` is an https URL to notify (needs ``GENACCEL_WEBHOOK_SECRET``).
            owner: the caller's owner id (``owner(...)``).
            idempotency_key: the client's key for this submission (scoped to the owner).
            job_id: an id the client chose.
            upload: the path of an image the web UI received (it replaces ``flat["init_image"]``).
            metadata: recorded in the new job's metadata (e.g. which API surface queued it).
        """
        if idempotency_key:
            job_id = hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()[:32]
        if job_id is not None:
            found = self._existing(job_id, owner)
            if found is not None:
                return found, False
        try:
            return self._submit(flat, owner, job_id, upload, metadata), True
        except JobStateConflict:  # another request with the same id won the race
            found = self._existing(job_id, owner) if job_id else None
            if found is None:
                raise
            return found, False

    def rerun(self, job: Job, owner: str, *, seed: int | None = None) -> Job:
        """Queue ``job``'s request again: with its own seed, or ``seed``."""
        self._check_cap(owner)
        params = job.request.params.model_copy(update={"seed": job.request.params.seed if seed is None else seed})
        return self.enqueue(job.request.model_copy(update={"params": params}), owner)

    def vary(self, job: Job, owner: str) -> Job:
        """Queue ``job``'s request with a fresh random seed."""
        return self.rerun(job, owner, seed=new_seed())

    def cancel(self, job_id: str, owner: str) -> Job:
        """A queued job never starts; a running one stops at its next step (409 when finished)."""
        self.get(job_id, owner)
        return self.store.cancel(job_id)

    def enqueue(self, request: JobRequest, owner: str | None, *, job_id: str | None = None,
                metadata: dict[str, Any] | None = None, output_dir: Path | None = None) -> Job:
        """Validate and resolve ``request``, record it for ``owner`` and hand it to the dispatcher;
        an identical earlier request that succeeded answers it at once (the result cache)."""
        resolved, info = prepare_request(request, self.registry, self.settings)
        key = result_key(resolved, weights_digest(info)) if self.settings.result_cache else None
        cached = self._cached(key, resolved) if key and resolved.cache else None
        job = self.store.create(resolved, job_id=job_id, owner=owner,
                                output_dir=str(output_dir.resolve()) if output_dir else None)
        extra = {**(metadata or {}), **({"result_key": key} if key else {})}
        if cached is not None:
            self.store.update_metadata(job.id, {**extra, "result_cache": {"from_job": cached.id},
                                                "warnings": [f"identical to job {cached.id}: its artifacts are "
                                                             "returned without running the pipeline (pass "
                                                             "cache=false to run it again)"]})
            artifacts = _copied(cached.artifacts, output_dir) if output_dir else cached.artifacts
            return self.store.finish(job.id, "succeeded", artifacts=artifacts, timings={"queued_s": 0.0})
        if extra:
            self.store.update_metadata(job.id, extra)
        self.backend.dispatcher.submit(job.id)
        return job

    def _cached(self, key: str, request: JobRequest) -> Job | None:
        """The earlier job that succeeded for ``key`` and whose files are all still there."""
        found = self.store.lookup_result(key)
        if found is None:
            return None
        try:
            job = self.store.get(found)
        except JobNotFound:
            return None
        if job.state != "succeeded" or not job.artifacts:
            return None
        if not all(self.artifacts.exists(a.path) for a in job.artifacts):
            return None
        return job

    # -- helpers ---------------------------------------------------------------------------

    def _submit(self, flat: dict[str, Any], owner: str, job_id: str | None, upload: str | None,
                metadata: dict[str, Any] | None = None) -> Job:
        self._check_cap(owner)
        flat = {k: v for k, v in flat.items() if v is not None}
        webhook = flat.pop("webhook", None)
        if webhook is not None:
            if not self.settings.webhook_secret:
                raise InvalidRequest("webhook", webhook, "this server has no webhook secret",
                                     "ask the operator to set GENACCEL_WEBHOOK_SECRET, or poll / use events")
            check_url(str(webhook), self.settings.webhook_allow_private)
        folder, limit = self.settings.home / "uploads" / owner, self.settings.limits.init_image_max_bytes
        if upload:
            flat["init_image"] = str(_store_upload(upload, folder, limit))
        elif flat.get("init_image"):
            flat["init_image"] = str(save_data_url(str(flat["init_image"]), folder, limit))
        extra = {**(metadata or {}), **({"webhook": str(webhook)} if webhook is not None else {})}
        return self.enqueue(JobRequest.from_flat(flat), owner, job_id=job_id, metadata=extra or None)

    def _existing(self, job_id: str, owner: str) -> Job | None:
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            return None
        if self.keys.enabled and job.owner != owner:
            raise JobStateConflict(f"job id {job_id!r} is taken; fix: choose another id")
        return job

    def _check_cap(self, owner: str) -> None:
        queued = self.store.count(state="queued", owner=self.scope(owner))
        cap = self.settings.max_queued_per_key
        if queued >= cap:
            raise TooManyRequests(f"{queued} jobs already queued, the cap is {cap}; fix: wait for some to "
                                  "finish or cancel them", 5.0)


def _copied(artifacts: list[Artifact], folder: Path) -> list[Artifact]:
    """Local artifacts copied into ``folder`` (a CLI run asked for its files there)."""
    out = []
    for art in artifacts:
        if art.path.startswith(S3_SCHEME) or Path(art.path).parent == folder.resolve():
            out.append(art)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for location in artifact_locations(art):
            if Path(location).is_file():
                shutil.copy2(location, folder / Path(location).name)
        out.append(art.model_copy(update={"path": str((folder / art.name).resolve())}))
    return out


def result_key(request: JobRequest, weights: str) -> str | None:
    """What makes two requests give the same files: the model's weights and every resolved
    parameter (seed included; an init image by its content). ``None`` for requests that are not
    deterministic (no seed)."""
    if request.params.seed is None:
        return None
    data = request.model_dump(mode="json", exclude={"priority", "cache"})
    init = request.params.init_image
    if init:
        try:
            data["params"]["init_image"] = hashlib.sha256(Path(init).read_bytes()).hexdigest()
        except OSError:
            return None
    text = json.dumps({"weights": weights, "request": data}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _store_upload(path_text: str, folder: Path, limit: int) -> Path:
    """Copy an image uploaded through the web UI into ``folder`` with the API's checks."""
    path = Path(path_text)
    if not path.is_file():
        raise InvalidRequest("init_image", path.name, "the upload is gone", "upload the image again")
    size = path.stat().st_size
    if size > limit:
        raise InvalidRequest("init_image", f"{size} bytes", f"the limit is {limit} bytes", "upload a smaller image")
    return save_data_url("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), folder, limit)
