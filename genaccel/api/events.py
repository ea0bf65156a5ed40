"""Server-sent events of one job, derived from its store record.

Event ids are deterministic functions of the job's state, so a client that reconnects with
``Last-Event-ID`` gets exactly the events after the last one it saw (intermediate progress
steps it missed are folded into the latest one):

* ``queued``: id 0
* ``started``: ``attempt * 1_000_000``
* ``progress``: ``attempt * 1_000_000 + 2 * step``
* ``audio`` (a streamed speech sentence, ``data.audio`` a FLAC data URL): ``attempt * 1_000_000 +
  2 * step + 1``, ``step`` being the one that finished it (a sentence is recorded just after its
  last step's progress, so the ids keep the order things happened in)
* ``succeeded`` / ``failed`` / ``cancelled``: 10**12, and the stream ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from genaccel.spec import Job

ATTEMPT = 1_000_000
FINAL = 10**12


def job_events(job: Job, view: Callable[[Job], dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    """Every event the job's current record implies, in order: ``(id, name, data)``."""
    out: list[tuple[int, str, dict[str, Any]]] = [(0, "queued", {"id": job.id, "priority": job.priority})]
    if job.attempts and job.started_at is not None:
        base = job.attempts * ATTEMPT
        out.append((base, "started", {"id": job.id, "attempt": job.attempts, "worker": job.worker}))
        if job.progress.step:
            data: dict[str, Any] = {"step": job.progress.step, "total": job.progress.total}
            if job.metadata.get("preview"):
                data["preview"] = job.metadata["preview"]
            out.append((base + 2 * job.progress.step, "progress", data))
        out += [(base + 2 * int(chunk["step"]) + 1, "audio", chunk) for chunk in job.metadata.get("audio_chunks", [])]
        out.sort(key=lambda event: event[0])
    if job.done:
        out.append((FINAL, job.state, view(job)))
    return out


def format_event(event_id: int, name: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(get: Callable[[], Job], view: Callable[[Job], dict[str, Any]], last_id: int,
                 poll_s: float = 0.2, keepalive_s: float = 15.0) -> AsyncIterator[str]:
    """Poll the store and yield new events until the job is finished."""
    idle = 0.0
    while True:
        job = await anyio.to_thread.run_sync(get)
        sent = False
        for event_id, name, data in job_events(job, view):
            if event_id > last_id:
                last_id = event_id
                sent = True
                yield format_event(event_id, name, data)
        if job.done:
            return
        idle = 0.0 if sent else idle + poll_s
        if idle >= keepalive_s:
            idle = 0.0
            yield ": keep-alive\n\n"
        await anyio.sleep(poll_s)


def parse_last_event_id(header: str | None) -> int:
    try:
        return int(header) if header else -1
    except ValueError:
        return -1
