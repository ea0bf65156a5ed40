"""Artifact files with their generation parameters inside, so any output can be re-run.

One writer per media type (``png``, ``video``, ``audio``); each embeds the metadata where its
format allows and always writes a JSON sidecar beside the file (``NAME.json``).
``request_from_artifact`` reads any of them back (``genaccel render --from FILE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genaccel.artifacts.audio import check_audio_format, read_audio_tag, write_audio
from genaccel.artifacts.meta import META_KEY, payload, read_sidecar, sidecar_path, versions
from genaccel.artifacts.png import a1111_parameters, read_png, write_png
from genaccel.artifacts.video import read_video_tag, write_video
from genaccel.errors import BadInputFile
from genaccel.spec import Artifact, JobRequest, parse_request

__all__ = [
    "MEDIA_TYPES",
    "META_KEY",
    "a1111_parameters",
    "check_audio_format",
    "payload",
    "read_metadata",
    "request_from_artifact",
    "sidecar_path",
    "versions",
    "write_audio",
    "write_png",
    "write_video",
]


def api_path(job_id: str, name: str) -> str:
    """Where the REST API serves a job's file (the one place this URL is built)."""
    return f"/v1/artifacts/{job_id}/{name}"


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata of a genaccel artifact: embedded in the file where its format holds it,
    else its sidecar (``NAME.json``), which may also be passed itself."""
    path = Path(path)
    if not path.is_file():
        raise BadInputFile(f"--from {path}: no such file; fix: pass a file made by genaccel (PNG, MP4, WAV...)")
    if path.suffix.lower() == ".json":
        found = read_sidecar(path)
    else:
        readers = {".png": read_png, ".gif": read_video_tag, ".mp4": read_video_tag, ".webm": read_video_tag}
        found = readers.get(path.suffix.lower(), read_audio_tag)(path)
        if found is None or "request" not in found:
            found = read_sidecar(path)
    if found is None or "request" not in found:
        raise BadInputFile(f"--from {path}: it holds no genaccel metadata and has no sidecar "
                           f"{sidecar_path(path).name}; fix: pass a file made by genaccel, "
                           "or keep its sidecar beside it")
    return found


def request_from_artifact(path: Path) -> JobRequest:
    """The exact request that made this artifact (all its outputs, same base seed).

    The whole request is re-run rather than just this output's seed, because a batch of several
    outputs and a single output can differ in the last bit of floating point; re-running the
    same request reproduces every output on the same machine.
    """
    return parse_request(dict(read_metadata(path)["request"]))


def artifact_file(artifacts: list[Artifact], name: str) -> tuple[str, str] | None:
    """``(location, media type)`` of the file called ``name`` among a job's artifacts, their
    sidecars and posters (looked up by name in the job's record, never as a path); ``None`` when
    the record has no such file. A location is a local path or an object-store URI."""
    for artifact in artifacts:
        for location in artifact_locations(artifact):
            if location.rsplit("/", 1)[-1] == name:
                media = artifact.media_type if location == artifact.path else (
                    "application/json" if name.endswith(".json") else "image/png")
                return location, media
    return None


def artifact_locations(artifact: Artifact) -> list[str]:
    """Every file an artifact consists of: the file, its sidecar and a video's poster."""
    folder, _, name = artifact.path.rpartition("/")
    found = [artifact.path]
    if artifact.sidecar:
        found.append(f"{folder}/{artifact.sidecar}")
    if artifact.media_type.startswith("video/") or artifact.media_type == "image/gif":
        found.append(f"{folder}/{Path(name).stem}.poster.png")
    if artifact.media_type.startswith("audio/"):
        found.append(f"{folder}/{Path(name).stem}.spectrogram.png")
    return found
