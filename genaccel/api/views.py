"""Response bodies of the REST API (what OpenAPI documents), built from store records."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genaccel.artifacts import api_path
from genaccel.spec import Job

JOB_EXAMPLE: dict[str, Any] = {
    "id": "8f14e45fceea167a5a36dedd4bea2543", "state": "running", "priority": 5,
    "request": {"modality": "image", "prompt": "a blue circle on a white background", "model": "shapes-sd",
                "profile": "off", "steps": 50, "guidance_scale": 7.5, "seed": 42, "width": 64, "height": 64,
                "num_outputs": 1, "priority": 5},
    "progress": {"step": 12, "total": 50}, "queue_position": None, "attempts": 1,
    "created_at": 1764379200.0, "started_at": 1764379200.1, "finished_at": None, "timings": {},
    "artifacts": [], "error": None, "metadata": {"techniques": []},
}
REQUEST_EXAMPLE: dict[str, Any] = {
    "prompt": "a blue circle on a white background", "model": "shapes-sd", "steps": 30, "seed": 42,
    "webhook": "https://example.com/genaccel-hook",
}


class ArtifactView(BaseModel):
    name: str
    url: str
    media_type: str
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    bytes: int = 0
    duration_s: float | None = None
    frames: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    sidecar_url: str | None = None
    """The JSON sidecar: the whole request and generation metadata."""


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    fix: str | None = None


class ProgressView(BaseModel):
    step: int
    total: int


class JobView(BaseModel):
    """One job as clients see it (no tracebacks, no server paths)."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})
    id: str
    state: str
    priority: int
    request: dict[str, Any] = Field(description="the resolved request, flat (every default filled in)")
    progress: ProgressView
    queue_position: int | None = Field(None, description="queued jobs ahead of this one; null unless queued")
    attempts: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    timings: dict[str, float]
    artifacts: list[ArtifactView]
    error: ErrorBody | None = None
    cancel_requested: bool = False
    metadata: dict[str, Any]


class JobPageView(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last")


class ErrorView(BaseModel):
    error: ErrorBody


def job_view(job: Job, base: str, queue_position: int | None = None) -> JobView:
    request = job.request.flat()
    if "init_image" in request:  # a server-side upload path: say only that there was one
        request["init_image"] = "uploaded"
    return JobView(
        id=job.id, state=job.state, priority=job.priority, request=request,
        progress=ProgressView(step=job.progress.step, total=job.progress.total), queue_position=queue_position,
        attempts=job.attempts, created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        timings=job.timings,
        artifacts=[ArtifactView(
            **a.model_dump(exclude={"path", "sidecar"}), url=base + api_path(job.id, a.name),
            sidecar_url=base + api_path(job.id, a.sidecar) if a.sidecar else None) for a in job.artifacts],
        error=ErrorBody(code=job.error.code, message=job.error.message) if job.error else None,
        cancel_requested=job.cancel_requested,
        metadata={k: v for k, v in job.metadata.items() if k not in ("owner", "audio_chunks")},
    )
