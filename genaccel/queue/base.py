"""The ``Dispatcher`` protocol: how a submitted job id reaches a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from genaccel.spec import Job


class JobRunner(Protocol):
    """Runs one claimed (``running``) job to a terminal state (``pipelines.runner.JobRunner``)."""

    def __call__(self, job: Job, claim: Callable[[list[str]], list[Job]] | None = None) -> None:
        """``claim(ids)`` claims more queued jobs for the same worker (to batch them)."""
        ...


class Dispatcher(Protocol):
    def start(self) -> None:
        """Start taking jobs."""
        ...

    def submit(self, job_id: str) -> None:
        """Tell workers a job was queued (its record is already in the store)."""
        ...

    def stop(self, *, drain: bool = False, timeout: float | None = None) -> None:
        """Stop workers; with ``drain`` let queued jobs finish first. Running jobs finish."""
        ...
