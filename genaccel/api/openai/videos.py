"""OpenAI's asynchronous video API: ``POST /videos`` queues a job and answers a video object at
once; ``GET /videos/{id}`` is its state (``queued``, ``in_progress``, ``completed``, ``failed``) and
progress; ``GET /videos/{id}/content`` downloads the clip (``variant=thumbnail``: its poster PNG).
A video's id is its job's id (``GET /v1/jobs/{id}`` shows the same job natively).

Honoured: ``prompt``, ``model``, ``seconds`` (frames = seconds x the model's fps, rounded up to the
model's frame rule), ``size`` (``WIDTHxHEIGHT``, rounded to the model's size multiple),
``input_reference`` (the first frame, for image-to-video models; refused by text-to-video ones). Extras:
``steps``, ``seed``, ``profile``, ``negative_prompt``, ``guidance_scale``, ``fps``, ``num_frames``,
``strength``, ``output_format`` (mp4, webm, gif), ``priority``, ``cache``. Not offered:
``variant=spritesheet``, remix, edit, delete. ``GET /videos`` lists your videos, newest first.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from genaccel.api.deps import Caller, Service
from genaccel.api.openai.common import (
    EXTRAS,
    Body,
    IdempotencyKey,
    form_or_json,
    headers,
    parse_size,
    read_file,
    resolve_model,
    submit,
)
from genaccel.api.openai.errors import OpenAIError, OpenAIRoute, invalid
from genaccel.api.openai.video_fit import (
    as_openai,
    check_reference,
    fit_seconds,
    fit_size,
    reference_size,
    video_kind,
)
from genaccel.errors import InvalidRequest, JobNotFound
from genaccel.service import JobService
from genaccel.service.http import file_response
from genaccel.spec import Job
from pipelines.modality import adapter_for
from pipelines.video import DEFAULT_FPS

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])

HONOURED = ("prompt", "model", "seconds", "size", "input_reference")
VIDEO_EXTRAS = {**EXTRAS, "fps": "fps", "num_frames": "num_frames", "strength": "strength",
                "output_format": "output_format"}
STATUS = {"queued": "queued", "running": "in_progress", "succeeded": "completed"}
Variant = Literal["video", "thumbnail", "spritesheet"]
POLL_MS = "250"
"""``openai-poll-after-ms``: how often the client's ``poll`` helper asks."""


def video_object(job: Job) -> dict[str, Any]:
    """A job as OpenAI's ``video`` object."""
    p = job.request.params
    art = job.artifacts[0] if job.artifacts else None
    seconds = art.duration_s if art is not None and art.duration_s else (
        p.num_frames / p.fps if p.num_frames and p.fps else 0.0)
    done = job.state == "succeeded"
    error = None
    if job.state in ("failed", "cancelled"):
        error = {"code": job.error.code if job.error else "cancelled",
                 "message": job.error.message if job.error else "the job was cancelled"}
    total = job.progress.total
    return {"id": job.id, "object": "video", "model": job.request.model, "status": STATUS.get(job.state, "failed"),
            "progress": 100 if done else int(100 * job.progress.step / total) if total else 0,
            "created_at": int(job.created_at),
            "completed_at": int(job.finished_at) if done and job.finished_at else None,
            "expires_at": None, "prompt": job.request.prompt, "seconds": f"{seconds:g}",
            "size": f"{p.width}x{p.height}", "error": error, "remixed_from_video_id": None}


def answer(job: Job, warnings: list[str] | None = None) -> JSONResponse:
    return JSONResponse(video_object(job), headers={**headers(warnings or [], [job]), "openai-poll-after-ms": POLL_MS})


def video_job(service: JobService, video_id: str, owner: str) -> Job:
    """One of ``owner``'s video jobs (another owner's, or a job of another modality: 404)."""
    job = service.get(video_id, owner)
    if job.request.modality != "video":
        raise JobNotFound(video_id)
    return job


@router.post("/v1/videos")
async def create_video(request: Request, service: Service, owner: Caller, key: IdempotencyKey) -> JSONResponse:
    """Queue a video (OpenAI's ``videos.create``); poll ``GET /videos/{id}`` until ``completed``.
    ``seconds`` and ``size`` are fitted to the model's rules (``video_fit.py``)."""
    values, _ = await form_or_json(request)
    body = Body.read(values, HONOURED, {}, VIDEO_EXTRAS)
    info = resolve_model(service, body.model(service), "video")
    honoured = set(adapter_for(info).fields)
    kind = video_kind(info)
    flat: dict[str, Any] = {"modality": "video", "prompt": body.text("prompt", required=True), "model": info.name,
                            **body.extras(VIDEO_EXTRAS)}
    seconds = body.number("seconds", float)
    if seconds is not None:
        fps = body.number("fps", float) or info.defaults.fps or DEFAULT_FPS
        if seconds <= 0:
            raise invalid("seconds", f"seconds={seconds:g} must be above 0")
        if body.get("num_frames") is not None:
            raise invalid("seconds", "seconds and num_frames were both given; fix: pass one of them")
        if kind is not None:
            flat["num_frames"] = fit_seconds(kind, info, seconds, fps, service.settings, body.warnings)
        elif "num_frames" in honoured:
            flat["num_frames"] = max(1, round(seconds * fps))
        else:
            body.warnings.append(f"seconds ignored: {info.name} makes clips of one length")
    width, height = parse_size(body.get("size"))
    if width is not None and height is not None:
        if kind is not None:
            width, height = fit_size(kind, width, height, body.warnings)
        if "width" in honoured:
            flat.update(width=width, height=height)
        else:
            body.warnings.append(f"size ignored: {info.name} makes clips of one size")
    reference = body.get("input_reference")
    if kind is not None:
        check_reference(kind, info, reference is not None)
    if reference is not None:
        raw = await read_file(reference, "input_reference", service.settings.limits.init_image_max_bytes)
        if kind is not None:
            reference_size(raw, (width or info.defaults.width or 0, height or info.defaults.height or 0),
                           body.warnings)
        flat["init_image"] = "data:image/png;base64," + base64.b64encode(raw).decode()
    try:
        job = await submit(service, flat, owner, key=key, endpoint="videos")
    except InvalidRequest as exc:  # the adapter's own checks, in this endpoint's words
        if type(exc) is not InvalidRequest:  # an unknown model, profile...: the shared translation
            raise
        raise as_openai(exc) from None
    return answer(job, body.warnings)


def videos_after(service: JobService, owner: str, after: str | None, limit: int) -> tuple[list[Job], bool]:
    """``owner``'s videos, newest first, after the one called ``after`` (OpenAI pages by the last id
    seen; the store by its own cursor, so its pages are walked to that id)."""
    out: list[Job] = []
    found, cursor = after is None, None
    while True:
        page = service.list(owner, modality="video", limit=200, cursor=cursor)
        for job in page.jobs:
            if found:
                out.append(job)
                if len(out) > limit:
                    return out[:limit], True
            found = found or job.id == after
        if page.next_cursor is None:
            return out, False
        cursor = page.next_cursor


@router.get("/v1/videos")
async def list_videos(service: Service, owner: Caller, after: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=100)] = 20,
                      order: Literal["asc", "desc"] = "desc") -> JSONResponse:
    """Your videos, newest first (OpenAI's ``videos.list``; ``order=asc`` is not offered)."""
    if order != "desc":
        raise invalid("order", "order=asc is not offered; fix: use desc (newest first)", "unsupported_value")
    jobs, more = await to_thread.run_sync(videos_after, service, owner, after, limit)
    data = [video_object(j) for j in jobs]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})


@router.get("/v1/videos/{video_id}")
async def retrieve_video(video_id: str, service: Service, owner: Caller) -> JSONResponse:
    """State and progress of a video (OpenAI's ``videos.retrieve``)."""
    return answer(await to_thread.run_sync(video_job, service, video_id, owner))


@router.get("/v1/videos/{video_id}/content", response_model=None, responses={
    200: {"content": {"video/mp4": {}, "image/png": {}}, "description": "the clip, or its poster"}})
async def video_content(video_id: str, service: Service, owner: Caller,
                        variant: Annotated[Variant, Query()] = "video") -> Response:
    """The clip (OpenAI's ``videos.download_content``); ``variant=thumbnail``: its poster frame."""
    job = await to_thread.run_sync(video_job, service, video_id, owner)
    if job.state != "succeeded" or not job.artifacts:
        raise OpenAIError(404 if job.done else 400, f"video {video_id} is {video_object(job)['status']}, so it has "
                          "no content; fix: poll GET /videos/{id} until its status is completed",
                          code="video_not_ready", param="video_id")
    if variant == "spritesheet":
        raise invalid("variant", "variant=spritesheet is not offered; fix: use video or thumbnail",
                      "unsupported_value")
    name = job.artifacts[0].name
    if variant == "thumbnail":
        name = name.rsplit(".", 1)[0] + ".poster.png"
    found = await to_thread.run_sync(service.file, job, name)
    return file_response(found)
