"""State changes of a job record, shared by every store: each takes the current ``Job`` and
returns the new one, or raises ``JobStateConflict``. Stores run them inside their own
transaction (SQLite ``BEGIN IMMEDIATE``, Redis ``WATCH``/``MULTI``)."""

from __future__ import annotations

import time

from genaccel.errors import JobStateConflict
from genaccel.spec import TERMINAL_STATES, Artifact, Job, JobError, JobState, Progress


def _owned(job: Job, worker: str | None, action: str) -> None:
    if worker is not None and job.worker != worker and not (job.state == "running" and job.worker is None):
        holder = f"is run by {job.worker}" if job.worker else f"is {job.state}"
        raise JobStateConflict(f"job {job.id} {holder}, not by {worker}; this worker cannot {action} it")


def finished(job: Job, state: JobState, artifacts: list[Artifact] | None, error: JobError | None,
             timings: dict[str, float] | None, worker: str | None = None) -> Job:
    if job.done:
        raise JobStateConflict(f"job {job.id} is already {job.state}; it cannot become {state}")
    _owned(job, worker, f"make {state}")
    return job.model_copy(update={
        "state": state, "finished_at": time.time(), "artifacts": artifacts or [],
        "error": error, "timings": {**job.timings, **(timings or {})},
    })


def cancelled(job: Job) -> Job:
    if job.state in TERMINAL_STATES:
        raise JobStateConflict(f"job {job.id} is already {job.state} and cannot be cancelled; fix: nothing to do")
    if job.state == "queued":
        return job.model_copy(update={"state": "cancelled", "cancel_requested": True, "finished_at": time.time()})
    return job.model_copy(update={"cancel_requested": True})


def requeued(job: Job, reason: str, worker: str | None = None) -> Job:
    if job.state != "running":
        raise JobStateConflict(f"job {job.id} is {job.state}, only a running job can be re-queued")
    _owned(job, worker, "re-queue")
    notes = [*job.metadata.get("requeued", []), reason]
    return job.model_copy(update={"state": "queued", "worker": None, "progress": Progress(),
                                  "metadata": {**job.metadata, "requeued": notes}})
