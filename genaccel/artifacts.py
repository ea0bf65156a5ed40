"""Artifact files with their generation parameters embedded, so any output can be re-run.

PNG: an A1111-style ``parameters`` text chunk (readable by other tools) plus a ``genaccel`` iTXt
chunk holding the whole request, seed, model, profile, versions and timings as JSON.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genaccel import __version__
from genaccel.errors import BadInputFile
from genaccel.spec import Artifact, JobRequest, parse_request

META_KEY = "genaccel"


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the pixels."""
    out = {"genaccel": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            continue
    return out


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


def write_png(image: Image.Image, path: Path, request: JobRequest, seed: int, meta: dict[str, Any]) -> Artifact:
    """Write ``image`` atomically with its metadata; ``meta`` adds job id, timings, scheduler..."""
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(request, seed, meta))
    payload = {"request": request.model_dump(mode="json"), "seed": seed, "versions": versions(), **meta}
    info.add_itxt(META_KEY, json.dumps(payload, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    image.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)
    return Artifact(name=path.name, path=str(path.resolve()), media_type="image/png", seed=seed,
                    width=image.width, height=image.height, bytes=path.stat().st_size)


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata of a genaccel artifact."""
    try:
        with Image.open(path) as img:
            text = img.text.get(META_KEY)  # type: ignore[attr-defined]
    except (OSError, AttributeError) as exc:
        raise BadInputFile(
            f"--from {path}: cannot read it as a PNG ({exc}); fix: pass a PNG made by genaccel"
        ) from None
    if text is None:
        raise BadInputFile(f"--from {path}: the PNG has no genaccel metadata; fix: pass a PNG made by genaccel")
    return dict(json.loads(text))


def request_from_artifact(path: Path) -> JobRequest:
    """The exact request that made this artifact (all its outputs, same base seed).

    The whole request is re-run rather than just this image's seed, because a batch of several
    outputs and a single output can differ in the last bit of floating point; re-running the
    same request reproduces every pixel on the same machine.
    """
    return parse_request(dict(read_metadata(path)["request"]))
