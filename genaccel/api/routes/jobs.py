"""Jobs: submit (idempotent), list, get, cancel, server-sent events, and artifact files."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from genaccel.api import events
from genaccel.api.deps import ERRORS, Caller, Service, base_url
from genaccel.api.views import REQUEST_EXAMPLE, ErrorView, JobPageView, JobView, job_view
from genaccel.errors import InvalidRequest
from genaccel.service import JobService
from genaccel.service.http import file_response
from genaccel.spec import Job, JobState, Modality

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
JobBody = Annotated[dict[str, Any], Body(description="a flat request, the same keys as a batch line",
                                         examples=[REQUEST_EXAMPLE])]

router = APIRouter(tags=["jobs"], responses=ERRORS)


def view(service: JobService, job: Job, request: Request) -> JobView:
    return job_view(job, base_url(request), service.queue_position(job))


def created(service: JobService, job: Job, new: bool, request: Request) -> JSONResponse:
    body = view(service, job, request).model_dump(mode="json")
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not new:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202 if new else 200, headers=headers)


@router.post("/v1/jobs", status_code=202, response_model=JobView,
             responses={200: {"model": JobView, "description": "replay of an idempotent submission"}})
def create_job(request: Request, body: JobBody, service: Service, owner: Caller,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
    """Queue a job. With an ``Idempotency-Key`` header a retried submission returns the first job."""
    return created(service, *service.submit(body, owner, idempotency_key=idempotency_key), request)


@router.put("/v1/jobs/{job_id}", status_code=202, response_model=JobView,
            responses={200: {"model": JobView, "description": "the job already exists"},
                       409: {"model": ErrorView, "description": "the id is taken"}})
def put_job(request: Request, job_id: str, body: JobBody, service: Service, owner: Caller) -> JSONResponse:
    """Queue a job under an id the client chose (8-64 of A-Z a-z 0-9 _ -); repeating it is harmless."""
    if not JOB_ID.match(job_id):
        raise InvalidRequest("id", job_id, "must be 8-64 characters of A-Z a-z 0-9 _ -",
                             "choose an id such as a UUID")
    return created(service, *service.submit(body, owner, job_id=job_id), request)


@router.get("/v1/jobs", response_model=JobPageView)
def list_jobs(request: Request, service: Service, owner: Caller, state: JobState | None = None,
              modality: Modality | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
              cursor: str | None = None) -> JobPageView:
    """Your jobs, newest first."""
    page = service.list(owner, state=state, modality=modality, limit=limit, cursor=cursor)
    return JobPageView(jobs=[view(service, j, request) for j in page.jobs], next_cursor=page.next_cursor)


@router.get("/v1/jobs/{job_id}", response_model=JobView)
def get_job(request: Request, job_id: str, service: Service, owner: Caller) -> JobView:
    """State, progress, queue position, timings, artifacts and error of one job."""
    return view(service, service.get(job_id, owner), request)


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobView,
             responses={409: {"model": ErrorView, "description": "the job already finished"}})
def cancel_job(request: Request, job_id: str, service: Service, owner: Caller) -> JobView:
    """A queued job never starts; a running job stops at its next step."""
    return view(service, service.cancel(job_id, owner), request)


@router.get("/v1/jobs/{job_id}/events", responses={
    200: {"content": {"text/event-stream": {}}, "description": "queued, started, progress, "
          "then succeeded / failed / cancelled; resumable with Last-Event-ID"}})
def job_events(request: Request, job_id: str, service: Service, owner: Caller,
               last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """Server-sent events of one job until it finishes."""
    service.get(job_id, owner)
    base = base_url(request)

    def as_dict(job: Job) -> dict[str, Any]:
        return job_view(job, base).model_dump(mode="json")

    gen = events.stream(lambda: service.store.get(job_id), as_dict, events.parse_last_event_id(last_event_id))
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/artifacts/{job_id}/{name}", tags=["artifacts"], responses={
    200: {"content": {"image/png": {}, "video/mp4": {}, "audio/wav": {}, "application/json": {}},
          "description": "the file, its JSON sidecar (NAME.json) or a clip's poster (NAME.poster.png)"}})
def artifact(job_id: str, name: str, service: Service, owner: Caller) -> Response:
    """One output file of one of your jobs (looked up by name in the job's record, never as a path),
    from this server's disk or streamed from the artifact store."""
    return file_response(service.artifact(job_id, name, owner))
