"""``POST /images/generations`` and ``POST /images/edits`` (image-to-image), synchronous: each call
queues one job (``n`` outputs) and answers when it finished.

Honoured: ``model``, ``prompt``, ``n``, ``size``, ``response_format`` (``b64_json``, the default,
or ``url``: a signed link valid for an hour), ``output_format`` (png; jpeg / webp re-encoded for
``b64_json``), ``output_compression`` (jpeg / webp quality), ``user`` (recorded in the job's
metadata); edits also ``image`` (the init image) and the extra ``strength``. genaccel's own
``steps``, ``seed``, ``profile``, ``negative_prompt``, ``guidance_scale``, ``priority`` and ``cache`` come
from the client's ``extra_body``. Ignored (named in ``X-Genaccel-Warnings``): see ``IGNORED``.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image

from genaccel.api.deps import Caller, Service
from genaccel.api.openai.common import (
    EXTRAS,
    Body,
    IdempotencyKey,
    form_or_json,
    headers,
    parse_size,
    read_file,
    submit,
    succeeded,
    wait,
)
from genaccel.api.openai.errors import OpenAIRoute, invalid
from genaccel.service import JobService
from genaccel.service.links import FileLinks
from genaccel.spec import Job

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])

HONOURED = ("model", "prompt", "n", "size", "response_format", "output_format", "output_compression", "user",
            "stream")
IGNORED = {
    "quality": "genaccel's quality is set by steps and profile (extra_body)",
    "style": "no style presets; describe the style in the prompt",
    "background": "outputs are opaque PNGs",
    "moderation": "no moderation pass runs here",
    "safety_identifier": "not recorded",
    "partial_images": "partial images are not streamed",
    "complexity": "not a genaccel parameter",
    "svg": "no SVG output",
    "frame_count": "no animated image output",
    "frame_duration_ms": "no animated image output",
    "input_fidelity": "strength (extra_body) sets how closely an edit follows its image",
    "mask": "edits run as image-to-image over the whole image (no inpainting mask)",
    "markup": "edits run as image-to-image over the whole image",
}
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}


def links(request: Request) -> FileLinks:
    found: FileLinks = request.app.state.openai_links
    return found


def image_request(body: Body, service: JobService) -> dict[str, Any]:
    """The flat genaccel request of an images call."""
    if body.get("stream") not in (None, False, "false"):
        raise invalid("stream", "stream=true is not supported: images are answered when complete; fix: drop "
                                "stream", "unsupported_value")
    width, height = parse_size(body.get("size"))
    flat: dict[str, Any] = {"modality": "image", "prompt": body.text("prompt", required=True),
                            "model": body.model(service), "num_outputs": body.number("n", int),
                            "width": width, "height": height, **body.extras()}
    return {k: v for k, v in flat.items() if v is not None}


def response_options(body: Body) -> tuple[str, str, int | None]:
    kind = body.text("response_format") or "b64_json"
    if kind not in ("b64_json", "url"):
        raise invalid("response_format", f"response_format={kind!r} is invalid; fix: use b64_json or url")
    fmt = body.text("output_format") or "png"
    if fmt not in FORMATS:
        raise invalid("output_format", f"output_format={fmt!r} is not written here; fix: use png, jpeg or webp")
    if kind == "url" and fmt != "png":
        body.warnings.append(f"output_format ignored: a url serves the PNG the job wrote, not {fmt}")
    quality = body.number("output_compression", int)
    if quality is not None and not 0 <= quality <= 100:
        raise invalid("output_compression", f"output_compression={quality} must be 0..100")
    return kind, fmt, quality


def encoded(data: bytes, fmt: str, quality: int | None) -> bytes:
    """A PNG re-encoded as ``fmt`` (Pillow)."""
    if fmt == "png":
        return data
    with Image.open(io.BytesIO(data)) as img:
        out = io.BytesIO()
        img.convert("RGB").save(out, format=FORMATS[fmt][0], quality=quality if quality is not None else 90)
        return out.getvalue()


def images_response(service: JobService, job: Job, request: Request, kind: str, fmt: str,
                    quality: int | None, warnings: list[str]) -> JSONResponse:
    data = []
    for art in job.artifacts:
        if kind == "url":
            data.append({"url": str(request.base_url).rstrip("/") + links(request).url(job.id, art.name),
                         "revised_prompt": None})
        else:
            raw = b"".join(service.file(job, art.name).chunks())
            data.append({"b64_json": base64.b64encode(encoded(raw, fmt, quality)).decode(), "revised_prompt": None})
    p = job.request.params
    body = {"created": int(job.finished_at or time.time()), "data": data, "size": f"{p.width}x{p.height}",
            "output_format": fmt if kind == "b64_json" else "png"}
    return JSONResponse(body, headers=headers(warnings, [job]))


async def run_images(request: Request, service: JobService, owner: str, body: Body, flat: dict[str, Any],
                     key: str | None, endpoint: str) -> JSONResponse:
    kind, fmt, quality = response_options(body)
    extra = {"user": body.get("user")} if body.get("user") else None
    job = await submit(service, flat, owner, key=key, endpoint=endpoint, extra=extra)
    job = succeeded(await wait(service, job, owner, request, service.settings.openai_timeout_s))
    return images_response(service, job, request, kind, fmt, quality, body.warnings)


@router.post("/v1/images/generations")
async def generations(request: Request, service: Service, owner: Caller, key: IdempotencyKey) -> JSONResponse:
    """Text to image (OpenAI's ``images.generate``)."""
    values, _ = await form_or_json(request)
    body = Body.read(values, HONOURED, IGNORED)
    return await run_images(request, service, owner, body, image_request(body, service), key, "images.generations")


@router.post("/v1/images/edits")
async def edits(request: Request, service: Service, owner: Caller, key: IdempotencyKey) -> JSONResponse:
    """Image to image (OpenAI's ``images.edit``): ``image`` is the init image; ``strength``
    (extra_body, default 0.6) how far the result may move from it."""
    values, many = await form_or_json(request)
    body = Body.read(values, (*HONOURED, "image"), IGNORED, extras={"strength": "strength", **EXTRAS})
    images = many.get("image", [])
    if not images:
        raise invalid("image", "image is required: the picture to edit; fix: send it as a file field",
                      "missing_required_parameter")
    if len(images) > 1:
        body.warnings.append(f"image: {len(images)} images sent; the first is edited, the others are ignored")
    raw = await read_file(images[0], "image", service.settings.limits.init_image_max_bytes)
    flat = {**image_request(body, service), "strength": body.number("strength", float),
            "init_image": "data:image/png;base64," + base64.b64encode(raw).decode()}
    flat = {k: v for k, v in flat.items() if v is not None}
    return await run_images(request, service, owner, body, flat, key, "images.edits")

