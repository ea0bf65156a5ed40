"""The REST API (FastAPI): jobs, events, artifacts, models, profiles, health and metrics.

``create_app(backend)`` receives its store, dispatcher and registry (SQLite + threads or
Redis + Celery); it never builds them, so the same routes serve both shapes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse

from genaccel.api import events
from genaccel.api.auth import AuthError, RateLimiter, retry_after
from genaccel.api.jobs import Jobs
from genaccel.api.limits import BodyLimit
from genaccel.api.metrics import render_metrics
from genaccel.api.views import REQUEST_EXAMPLE, ErrorView, JobPageView, JobView, job_view
from genaccel.artifacts import artifact_file
from genaccel.errors import GenAccelError, InvalidRequest, JobNotFound, JobStateConflict
from genaccel.profiles import PROFILES
from genaccel.profiles import describe as describe_profile
from genaccel.queue.base import Dispatcher
from genaccel.settings import Settings
from genaccel.spec import MODALITIES, Job, JobRequest, JobState, Modality
from genaccel.store.base import Store
from genaccel.webhooks import check_url
from pipelines.registry import ModelRegistry

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorView, "description": "missing or unknown API key"},
    404: {"model": ErrorView, "description": "no such job (or not yours)"},
    422: {"model": ErrorView, "description": "invalid request: the error names field, value, limit and fix"},
    429: {"model": ErrorView, "description": "rate limit or queued-job cap reached; see Retry-After"},
}


# module level: the route signatures' string annotations are resolved against these globals
JobBody = Annotated[dict[str, Any], Body(description="a flat request, the same keys as a batch line",
                                         examples=[REQUEST_EXAMPLE])]
AuthHeader = Annotated[str | None, Header()]


class TooManyRequests(GenAccelError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_s: float) -> None:
        super().__init__(message)
        self.retry_s = retry_s


@dataclass
class Backend:
    """What the API runs on: ``genaccel serve`` builds one per shape."""

    settings: Settings
    store: Store
    dispatcher: Dispatcher
    registry: ModelRegistry


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def create_app(backend: Backend) -> FastAPI:
    settings, store = backend.settings, backend.store
    jobs = Jobs(backend)
    keys = jobs.keys
    limiter = RateLimiter(settings.rate_limit_per_min)
    app = FastAPI(title="genaccel", version="1", description=(
        "Generate images (and later video, speech and music) through a job queue. Submit a job, follow it "
        "with `GET /v1/jobs/{id}` or its server-sent events, then download its artifacts. With API keys "
        "configured, send `Authorization: Bearer KEY`; each key sees only its own jobs."))
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.state.backend = backend

    @app.exception_handler(GenAccelError)
    async def genaccel_error(_: Request, exc: GenAccelError) -> JSONResponse:
        headers = {"Retry-After": retry_after(exc.retry_s)} if isinstance(exc, TooManyRequests) else None
        return _error(exc.http_status, exc.to_dict(), headers)

    @app.exception_handler(AuthError)
    async def auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return _error(401, {"code": "unauthorized", "message": str(exc)}, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0])
        message = f"{field} is invalid: {err['msg']}; fix: see the OpenAPI schema at /docs"
        return _error(422, {"code": "invalid_request", "message": message, "field": field})

    def caller(request: Request, authorization: str | None, *, spend: bool = True) -> str:
        owner = keys.owner(authorization)
        if spend:
            wait = limiter.take(owner)
            if wait:
                raise TooManyRequests(f"more than {settings.rate_limit_per_min} requests a minute; "
                                      f"fix: retry after {retry_after(wait)} s", wait)
        return owner

    scope, own_job = jobs.scope, jobs.own

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def view(job: Job, request: Request) -> JobView:
        return job_view(job, base_url(request), jobs.queue_position(job))

    def submit(flat: dict[str, Any], owner: str, job_id: str | None) -> Job:
        full = jobs.over_cap(owner)
        if full:
            raise TooManyRequests(f"{full[0]} jobs already queued, the cap is {full[1]}; fix: wait for some to "
                                  "finish or cancel them", 5.0)
        flat = dict(flat)
        webhook = flat.pop("webhook", None)
        if webhook is not None:
            if not settings.webhook_secret:
                raise InvalidRequest("webhook", webhook, "this server has no webhook secret",
                                     "ask the operator to set GENACCEL_WEBHOOK_SECRET, or poll / use events")
            check_url(str(webhook), settings.webhook_allow_private)
        request = JobRequest.from_flat(jobs.store_init_image(flat, owner))
        return jobs.enqueue(request, owner, job_id=job_id,
                            metadata={"webhook": str(webhook)} if webhook is not None else None)

    def existing(job_id: str, owner: str) -> Job | None:
        try:
            job = store.get(job_id)
        except JobNotFound:
            return None
        if keys.enabled and job.owner != owner:
            raise JobStateConflict(f"job id {job_id!r} is taken; fix: choose another id")
        return job

    def create_once(flat: dict[str, Any], owner: str, job_id: str | None) -> tuple[Job, bool]:
        if job_id is not None:
            found = existing(job_id, owner)
            if found is not None:
                return found, False
        try:
            return submit(flat, owner, job_id), True
        except JobStateConflict:  # another request with the same id won the race
            found = existing(job_id, owner) if job_id else None
            if found is None:
                raise
            return found, False

    def created(job: Job, new: bool, request: Request) -> JSONResponse:
        body = view(job, request).model_dump(mode="json")
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if not new:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(body, status_code=202 if new else 200, headers=headers)

    @app.post("/v1/jobs", status_code=202, response_model=JobView, tags=["jobs"],
              responses={**ERRORS, 200: {"model": JobView, "description": "replay of an idempotent submission"}})
    def create_job(request: Request, body: JobBody,
                   authorization: AuthHeader = None,
                   idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
        """Queue a job. With an ``Idempotency-Key`` header a retried submission returns the first job."""
        owner = caller(request, authorization)
        job_id = None
        if idempotency_key:
            job_id = hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()[:32]
        return created(*create_once(body, owner, job_id), request)

    @app.put("/v1/jobs/{job_id}", status_code=202, response_model=JobView, tags=["jobs"],
             responses={**ERRORS, 200: {"model": JobView, "description": "the job already exists"},
                        409: {"model": ErrorView, "description": "the id is taken"}})
    def put_job(request: Request, job_id: str, body: JobBody,
                authorization: AuthHeader = None) -> JSONResponse:
        """Queue a job under an id the client chose (8-64 of A-Z a-z 0-9 _ -); repeating it is harmless."""
        owner = caller(request, authorization)
        if not JOB_ID.match(job_id):
            raise InvalidRequest("id", job_id, "must be 8-64 characters of A-Z a-z 0-9 _ -",
                                 "choose an id such as a UUID")
        return created(*create_once(body, owner, job_id), request)

    @app.get("/v1/jobs", response_model=JobPageView, tags=["jobs"], responses=ERRORS)
    def list_jobs(request: Request, state: JobState | None = None, modality: Modality | None = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None,
                  authorization: AuthHeader = None) -> JobPageView:
        """Your jobs, newest first."""
        owner = caller(request, authorization)
        page = store.list_jobs(state=state, modality=modality, limit=limit, cursor=cursor, owner=scope(owner))
        return JobPageView(jobs=[view(j, request) for j in page.jobs], next_cursor=page.next_cursor)

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=ERRORS)
    def get_job(request: Request, job_id: str, authorization: AuthHeader = None) -> JobView:
        """State, progress, queue position, timings, artifacts and error of one job."""
        owner = caller(request, authorization)
        return view(own_job(job_id, owner), request)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobView, tags=["jobs"],
              responses={**ERRORS, 409: {"model": ErrorView, "description": "the job already finished"}})
    def cancel_job(request: Request, job_id: str, authorization: AuthHeader = None) -> JobView:
        """A queued job never starts; a running job stops at its next step."""
        owner = caller(request, authorization)
        own_job(job_id, owner)
        return view(store.cancel(job_id), request)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], responses={
        **ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "queued, started, progress, "
                        "then succeeded / failed / cancelled; resumable with Last-Event-ID"}})
    def job_events(request: Request, job_id: str, authorization: AuthHeader = None,
                   last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
        """Server-sent events of one job until it finishes."""
        owner = caller(request, authorization)
        own_job(job_id, owner)
        base = base_url(request)

        def as_dict(job: Job) -> dict[str, Any]:
            return job_view(job, base).model_dump(mode="json")

        gen = events.stream(lambda: store.get(job_id), as_dict, events.parse_last_event_id(last_event_id))
        return StreamingResponse(gen, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/artifacts/{job_id}/{name}", tags=["artifacts"], responses={
        **ERRORS, 200: {"content": {"image/png": {}, "video/mp4": {}, "audio/wav": {}, "application/json": {}},
                        "description": "the file, its JSON sidecar (NAME.json) or a clip's poster (NAME.poster.png)"}})
    def artifact(request: Request, job_id: str, name: str,
                 authorization: AuthHeader = None) -> FileResponse:
        """One output file of one of your jobs (looked up by name in the job's record, never as a path)."""
        owner = caller(request, authorization)
        job = own_job(job_id, owner)
        found = artifact_file(job.artifacts, name)
        if found is None:
            raise JobNotFound(f"{job_id}/{name}")
        return FileResponse(found[0], media_type=found[1], filename=name)

    @app.get("/v1/models", tags=["catalogue"], responses=ERRORS)
    def models(request: Request, authorization: AuthHeader = None) -> list[dict[str, Any]]:
        """Models this server can run, with their defaults."""
        caller(request, authorization)
        return [{"name": m.name, "modality": m.modality, "family": m.family, "source": m.source,
                 "pipeline_class": m.pipeline_class, "defaults": asdict(m.defaults), "description": m.description}
                for m in backend.registry.available()]

    @app.get("/v1/profiles", tags=["catalogue"], responses=ERRORS)
    def profiles(request: Request, authorization: AuthHeader = None) -> list[dict[str, Any]]:
        """Acceleration profiles and what each does."""
        caller(request, authorization)
        return [describe_profile(p) for p in PROFILES.values()]

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        """Liveness and the store's reachability (no key needed)."""
        return {"status": "ok", "queued": store.count(state="queued"), "modalities": list(MODALITIES),
                "auth": keys.enabled}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def metrics() -> PlainTextResponse:
        """Prometheus text: jobs by state, queue depth, job run-time histogram, worker busy time."""
        return PlainTextResponse(render_metrics(store.stats()), media_type="text/plain; version=0.0.4")

    return app
