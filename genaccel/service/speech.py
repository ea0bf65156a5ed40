"""Streaming speech through the job service: text in, each sentence's audio out as soon as the
worker has made it (``stream_speech``). It reads the job's store record, so it works with
embedded workers and Celery workers alike; the OpenAI-compatible ``/v1/audio/speech`` and any
other streaming surface build on it.

Each chunk's edges are faded over 5 ms, so a client that simply concatenates them hears no
click at the seams (the stored file joins the sentences with a 10 ms crossfade instead).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from genaccel.artifacts.audio import chunk_samples
from genaccel.errors import JobCancelled, PipelineFailed
from genaccel.service.jobs import JobService
from genaccel.spec import Job

EDGE_FADE_S = 0.005


@dataclass(frozen=True)
class AudioChunk:
    """One sentence: ``samples`` float32 ``(n, channels)`` at ``sample_rate``."""

    job_id: str
    index: int
    total: int
    text: str
    samples: np.ndarray
    sample_rate: int

    def pcm16(self) -> bytes:
        """Little-endian 16-bit PCM (what raw-PCM streaming responses send)."""
        return (np.clip(self.samples, -1, 1) * 32767).astype("<i2").tobytes()


def fade_edges(samples: np.ndarray, sample_rate: int, fade_s: float = EDGE_FADE_S) -> np.ndarray:
    """Linear fade-in and fade-out over ``fade_s`` at both ends (``(n, channels)``)."""
    out = np.array(samples, dtype=np.float32, copy=True)
    n = min(int(fade_s * sample_rate), len(out) // 2)
    if n:
        ramp = np.linspace(0, 1, n, dtype=np.float32)[:, None]
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
    return out


def stream_speech(service: JobService, flat: dict[str, Any], owner: str, *, poll_s: float = 0.05,
                  timeout_s: float = 600.0) -> Iterator[AudioChunk]:
    """Queue a speech request and yield its sentences' audio in order, as they are recorded.

    Args:
        service: the job service (its store is where workers record each sentence).
        flat: the request's flat keys (``text``/``prompt``, ``model``, ``voice``, ``speed``, ``seed``,
            ``steps``...); ``modality`` is set to speech. Bad input raises ``InvalidRequest``
            before anything is queued.
        owner: the caller's owner id.

    Raises:
        PipelineFailed: the job failed. JobCancelled: it was cancelled.

    Example:
        >>> for chunk in stream_speech(service, {"text": "red cat jumps seven. blue dog sits two."}, owner):
        ...     send(chunk.pcm16())
    """
    job, _ = service.submit({**flat, "modality": "speech"}, owner)
    seen, deadline = 0, time.monotonic() + timeout_s
    while True:
        job = service.get(job.id, owner)
        found = new_chunks(job, seen)
        yield from found
        seen += len(found)
        if job.done:
            break
        if time.monotonic() > deadline:
            raise PipelineFailed(f"speech job {job.id} did not finish within {timeout_s:g} s")
        time.sleep(poll_s)
    if job.state == "cancelled":
        raise JobCancelled(f"speech job {job.id} was cancelled")
    if job.state != "succeeded":
        raise PipelineFailed(f"speech job {job.id} failed: {job.error.message if job.error else job.state}")
    if seen == 0:
        yield whole_chunk(service, job)


def new_chunks(job: Job, seen: int) -> list[AudioChunk]:
    """The sentences ``job`` recorded after the first ``seen`` (edges faded)."""
    records = job.metadata.get("audio_chunks", [])
    return [AudioChunk(job.id, int(r["index"]), int(r["total"]), str(r["text"]),
                       fade_edges(chunk_samples(r), int(r["sample_rate"])), int(r["sample_rate"]))
            for r in records[seen:]]


def whole_chunk(service: JobService, job: Job) -> AudioChunk:
    """A finished job's whole file as one chunk: a job answered from the result cache, or one run
    by an adapter that does not stream its sentences (a plugin's)."""
    import soundfile as sf

    first = job.artifacts[0]
    data = b"".join(service.file(job, first.name).chunks())
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return AudioChunk(job.id, 0, 1, job.request.prompt, fade_edges(samples, rate), int(rate))
