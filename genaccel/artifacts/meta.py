"""What every artifact carries: the whole request, its seed, the versions that decide the output
and the run's metadata, as one JSON payload; and the JSON sidecar that holds it beside any file."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from genaccel import __version__
from genaccel.spec import JobRequest

META_KEY = "genaccel"


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the output."""
    out = {"genaccel": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            continue
    return out


def payload(request: JobRequest, seed: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata of one output: request, seed, versions and ``meta`` (job id, timings...)."""
    return {"request": request.model_dump(mode="json"), "seed": seed, "versions": versions(), **meta}


def sidecar_path(path: Path) -> Path:
    """``clip.mp4`` -> ``clip.json``: where an artifact's metadata lies beside it."""
    return path.with_suffix(".json")


def write_atomic(path: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_sidecar(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as the JSON sidecar of the artifact at ``path``; returns the sidecar's path."""
    side = sidecar_path(path)
    write_atomic(side, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True)))
    return side


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(sidecar_path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None
