"""In-process dispatcher: worker threads over the store's queue (embedded shape).

Threads call ``store.claim_next`` (priority, then age) and hand the claimed id to the runner.
Submissions wake them through a condition variable; an idle thread also polls, so jobs queued by
another process on the same store are picked up when ``scope`` is ``None``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from genaccel.queue.base import JobRunner
from genaccel.spec import Job
from genaccel.store.base import Store, worker_identity

log = logging.getLogger(__name__)


class LocalDispatcher:
    """Worker threads in this process.

    Args:
        store: where jobs are claimed from.
        runner: called with each claimed job; must bring it to a terminal state.
        workers: number of threads (one per device is sensible).
        scope: when given, only these job ids are taken (a CLI render runs just its own jobs);
            ``submit`` adds to it. ``None`` takes every queued job (``genaccel serve``).
        poll_s: how often an idle thread looks at the store without being woken.
    """

    def __init__(
        self, store: Store, runner: JobRunner, *, workers: int = 1,
        scope: Iterable[str] | None = None, poll_s: float = 1.0,
    ) -> None:
        self.store, self.runner, self.workers, self.poll_s = store, runner, workers, poll_s
        self.scope: set[str] | None = set(scope) if scope is not None else None
        self._wake = threading.Condition()
        self._stopping = False
        self._drain = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"genaccel-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, job_id: str) -> None:
        with self._wake:
            if self.scope is not None:
                self.scope.add(job_id)
            self._wake.notify_all()

    def stop(self, *, drain: bool = False, timeout: float | None = None) -> None:
        with self._wake:
            self._stopping, self._drain = True, drain
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _claim(self, worker: str) -> Job | None:
        with self._wake:
            scope = None if self.scope is None else list(self.scope)
        return self.store.claim_next(worker, only=scope)

    @property
    def busy(self) -> bool:
        """Whether a worker thread is still alive (after ``stop`` with a timeout)."""
        return any(t.is_alive() for t in self._threads)

    def _claim_ids(self, worker: str, ids: list[str]) -> list[Job]:
        """Claim these queued jobs too (the runner batches compatible jobs), within scope."""
        with self._wake:
            if self.scope is not None:
                ids = [i for i in ids if i in self.scope]
        claimed = [self.store.claim_next(worker, only=[i]) for i in ids]
        return [j for j in claimed if j is not None]

    def _loop(self) -> None:
        worker = worker_identity()
        while True:
            with self._wake:
                if self._stopping and not self._drain:
                    return
            job = self._claim(worker)
            if job is None:
                with self._wake:
                    if self._stopping:
                        return
                    self._wake.wait(self.poll_s)
                continue
            try:
                self.runner(job, lambda ids: self._claim_ids(worker, ids))
            except Exception:  # the runner records failures; this guards the thread itself
                log.exception("runner crashed on job %s", job.id)
