"""Lifecycle events of a job as they leave a runner: ``started``, ``progress`` (with a step
preview a few times per job), ``audio`` (a part of the output ready early: a speech sentence) and
``finished``. A runner calls one listener with each; the
composition root connects it (webhooks: ``genaccel.webhooks.WebhookListener``), so the runner
knows nothing of HTTP. Clients that follow a job (SSE, the UI) read its store record, which works
across processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from genaccel.spec import Job

EventName = Literal["started", "progress", "audio", "finished"]


@dataclass(frozen=True)
class JobEvent:
    name: EventName
    job_id: str
    job: Job | None = None
    """The job's record (``started`` and ``finished``)."""
    step: int = 0
    total: int = 0
    preview: str | None = None
    """A small PNG data URL of the step (some ``progress`` events)."""
    chunk: dict[str, Any] | None = None
    """``audio`` events: ``index``, ``total``, ``text``, ``sample_rate``, ``step`` and ``audio`` (a FLAC
    data URL) of one streamed part (``genaccel.artifacts.audio.chunk_record``)."""


Listener = Callable[[JobEvent], None]

