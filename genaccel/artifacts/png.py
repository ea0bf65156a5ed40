"""PNG: an A1111-style ``parameters`` text chunk (readable by other tools) plus a ``genaccel``
iTXt chunk holding the whole request, seed, model, profile, versions and timings as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genaccel import __version__
from genaccel.artifacts.meta import META_KEY, payload, write_atomic, write_sidecar
from genaccel.spec import Artifact, JobRequest


def a1111_parameters(request: JobRequest, seed: int, meta: dict[str, Any]) -> str:
    """The ``parameters`` text A1111-compatible readers show."""
    p = request.params
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = {
        "Steps": p.steps, "Sampler": meta.get("scheduler"), "CFG scale": p.guidance_scale, "Seed": seed,
        "Size": f"{meta.get('width')}x{meta.get('height')}", "Model": request.model, "Profile": request.profile,
        "Denoising strength": p.strength, "Version": f"genaccel {__version__}",
    }
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items() if v is not None))
    return "\n".join(lines)


def png_info(request: JobRequest, seed: int, meta: dict[str, Any]) -> PngInfo:
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(request, seed, meta))
    info.add_itxt(META_KEY, json.dumps(payload(request, seed, meta), sort_keys=True))
    return info


def write_png(image: Image.Image, path: Path, request: JobRequest, seed: int, meta: dict[str, Any]) -> Artifact:
    """Write ``image`` atomically with its metadata (embedded and in a sidecar); ``meta`` adds job
    id, timings, scheduler..."""
    meta = {"width": image.width, "height": image.height, **meta}
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=png_info(request, seed, meta)))
    side = write_sidecar(path, payload(request, seed, meta))
    return Artifact(name=path.name, path=str(path.resolve()), media_type="image/png", seed=seed,
                    width=image.width, height=image.height, bytes=path.stat().st_size, sidecar=side.name)


def read_png(path: Path) -> dict[str, Any] | None:
    """The genaccel JSON embedded in a PNG (``None``: not a PNG, or none embedded)."""
    try:
        with Image.open(path) as img:
            text = img.text.get(META_KEY)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None
    return dict(json.loads(text)) if text else None
