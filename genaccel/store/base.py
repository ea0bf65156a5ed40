"""The ``Store`` protocol every job store implements (one contract test suite runs on all)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from genaccel.spec import Artifact, Job, JobError, JobRequest, JobState, Modality


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None
    """Pass back as ``cursor`` for the next page; ``None`` on the last page."""


@dataclass(frozen=True)
class Recovery:
    """What start-up recovery did with one job that was left ``running``."""

    job_id: str
    action: str  # "requeued" | "failed"
    reason: str


@dataclass(frozen=True)
class StoreStats:
    """Counters behind ``GET /metrics``."""

    counts: dict[str, int]
    """Jobs by state."""
    latencies: list[float]
    """Run time (``started_at`` to ``finished_at``) of the most recent finished jobs."""
    busy_s: dict[str, float]
    """Seconds each worker spent on the recent finished jobs."""
    caches: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``(hits, misses)`` of the service caches over the recent finished jobs: ``prompt``
    (text-encoder calls answered from the prompt-embedding cache) and ``result`` (identical
    requests answered with an earlier job's artifacts)."""


def recent_stats(counts: dict[str, int], finished: Iterable[Job]) -> StoreStats:
    """``StoreStats`` from the job counts and the most recent finished jobs (every store's way)."""
    latencies: list[float] = []
    busy: dict[str, float] = {}
    prompt = [0, 0]
    result = [0, 0]
    for job in finished:
        cached = job.metadata.get("prompt_cache") or {}
        prompt[0] += int(cached.get("hits", 0))
        prompt[1] += int(cached.get("misses", 0))
        if job.metadata.get("result_cache"):
            result[0] += 1
        elif job.metadata.get("result_key") and job.state == "succeeded":
            result[1] += 1
        if job.started_at is None or job.finished_at is None or job.metadata.get("result_cache"):
            continue
        took = job.finished_at - job.started_at
        latencies.append(took)
        worker = (job.worker or "unknown").rsplit(":", 1)[0]
        busy[worker] = busy.get(worker, 0.0) + took
    return StoreStats(counts=counts, latencies=latencies, busy_s=busy,
                      caches={"prompt": (prompt[0], prompt[1]), "result": (result[0], result[1])})


LATENCY_WINDOW = 1000
"""How many recent finished jobs ``Store.stats`` reports latencies and busy time for."""


def worker_identity() -> str:
    """``host:pid:thread`` of the caller; recovery uses host and pid to tell dead owners."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def owner_is_dead(worker: str | None) -> bool:
    """True when ``worker`` names a process on this host that no longer runs."""
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Store(Protocol):
    """Durable job records. All methods are safe to call from several threads."""

    def create(self, request: JobRequest, *, job_id: str | None = None, output_dir: str | None = None,
               owner: str | None = None) -> Job:
        """Record a new ``queued`` job (``request`` is already validated and resolved).
        ``JobStateConflict`` when ``job_id`` is taken."""
        ...

    def get(self, job_id: str) -> Job:
        """The job, or ``JobNotFound``."""
        ...

    def list_jobs(
        self, *, state: JobState | None = None, modality: Modality | None = None,
        limit: int = 50, cursor: str | None = None, owner: str | None = None,
    ) -> JobPage:
        """Newest first, filtered, paginated by an opaque cursor."""
        ...

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs run before this one (0: next); ``None`` unless it is queued."""
        ...

    def count(self, *, state: JobState | None = None, owner: str | None = None) -> int:
        """Number of jobs, optionally in one state and of one owner."""
        ...

    def stats(self) -> StoreStats:
        """Counts by state and recent latencies for ``/metrics``."""
        ...

    def claim_next(self, worker: str, only: Iterable[str] | None = None) -> Job | None:
        """Atomically move the most urgent, oldest queued job (optionally among ``only``) to
        ``running`` for ``worker``, counting an attempt; ``None`` when nothing is queued."""
        ...

    def set_progress(self, job_id: str, step: int, total: int) -> bool:
        """Record progress; returns whether a cancel was requested."""
        ...

    def update_metadata(self, job_id: str, metadata: dict[str, Any]) -> None:
        """Merge keys into the job's metadata (resolved techniques, warnings, versions)."""
        ...

    def remember_result(self, key: str, job_id: str) -> None:
        """Record that ``job_id`` succeeded for the deterministic request ``key`` (result cache)."""
        ...

    def lookup_result(self, key: str) -> str | None:
        """The job that last succeeded for ``key``, if any."""
        ...

    def finish(
        self, job_id: str, state: JobState, *, artifacts: list[Artifact] | None = None,
        error: JobError | None = None, timings: dict[str, float] | None = None, worker: str | None = None,
    ) -> Job:
        """Move a running job to a terminal state. With ``worker``, only while that worker runs it
        (``JobStateConflict`` otherwise: a worker whose claim lapsed cannot finish a job that was
        re-queued or taken by another worker, so no job is recorded as run twice)."""
        ...

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or flag a running one to stop at its next step.
        ``JobStateConflict`` for a finished job."""
        ...

    def requeue(self, job_id: str, reason: str, worker: str | None = None) -> Job:
        """Put a running job back in the queue (graceful shutdown, lost worker); with ``worker``,
        only while that worker runs it."""
        ...

    def recover(self, max_attempts: int) -> list[Recovery]:
        """Re-queue jobs left ``running`` by dead workers while attempts < max_attempts, else fail them."""
        ...

    def close(self) -> None:
        ...
