"""What runs inside a worker process: the ``run_job`` task, heartbeats and the recovery sweep.

Everything heavy (torch, the pipeline registry, the model cache) is created lazily in the
worker process on its first job, never in a parent process, so CUDA is initialised only where
a job runs.

Why a sweep of our own: Celery gives a killed worker's message back (``acks_late`` +
``reject_on_worker_lost``) when the worker's parent survives, but when the whole process dies
the message stays unacknowledged until the visibility timeout (hours, since it must exceed the
longest job). So every worker also heartbeats into the store and sweeps it: a running job whose
worker's heartbeat expired is re-queued (or failed after ``max_attempts``) and dispatched again.
A late duplicate message finds the job no longer queued and does nothing.

An orphaned worker (its launcher gone, see ``workers/lifeline.py``) is ``interrupt``ed: it takes
no new job, and its running job stops at its next step, goes back to the queue and is dispatched
again here, before its message is acknowledged; so it runs to the end once, on another worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import Celery

from genaccel.settings import Settings
from genaccel.store.base import Store
from workers.celery_app import TASK, make_celery

log = logging.getLogger(__name__)


class WorkerRuntime:
    """Per-process state: store, runner (model cache), identity, heartbeat and sweep threads."""

    def __init__(self, settings: Settings) -> None:
        from genaccel.store.redis import redis_store

        assert settings.redis_url
        self.settings = settings
        self.store: Store = redis_store(settings)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:celery"
        self._runner: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._app: Celery | None = None
        self._interrupted: str | None = None
        self._current: list[str] = []  # ids of the running jobs: the claimed one and those batched with it

    @property
    def runner(self) -> Any:
        if self._runner is None:
            from genaccel.webhooks import WebhookListener
            from pipelines.registry import ModelRegistry
            from pipelines.runner import JobRunner

            self._runner = JobRunner(self.store, ModelRegistry(self.settings, allow_paths=False), self.settings,
                                     on_event=WebhookListener(self.settings))
            if self._interrupted:
                self._runner.interrupt(self._interrupted)
        return self._runner

    def start(self, app: Celery) -> None:
        self._app = app
        self.store.heartbeat(self.identity)  # type: ignore[attr-defined]
        for target in (self._beat, lambda: self._sweep(app)):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def interrupt(self, reason: str) -> None:
        """Take no new job; the running one stops at its next step and goes back to the queue.
        Only sets flags, so it is safe inside a signal handler."""
        self._interrupted = reason
        if self._runner is not None:
            self._runner.interrupt(reason)

    def rescue(self) -> list[str]:
        """Dispatch again the current jobs that are back in the queue (before this process exits
        hard, between a re-queue and its dispatch); returns their ids. A job still ``running``
        here is left to the recovery sweep of another worker."""
        sent = []
        for job_id in list(self._current):
            try:
                if self.store.get(job_id).state == "queued":
                    self._dispatcher().submit(job_id)
                    sent.append(job_id)
            except Exception:
                log.exception("could not dispatch job %s again", job_id)
        return sent

    def _dispatcher(self) -> Any:
        from workers.dispatch import CeleryDispatcher

        return CeleryDispatcher(self.settings, self.store, self._app)

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s / 3):
            try:
                self.store.heartbeat(self.identity)  # type: ignore[attr-defined]
            except Exception:
                log.exception("heartbeat failed")

    def _sweep(self, app: Celery) -> None:
        dispatcher = self._dispatcher()
        while not self._stop.wait(max(1.0, self.settings.heartbeat_s / 2)):
            try:
                for rec in self.store.recover(self.settings.max_attempts):
                    log.warning("job %s %s: %s", rec.job_id, rec.action, rec.reason)
                    if rec.action == "requeued":
                        dispatcher.submit(rec.job_id)
            except Exception:
                log.exception("recovery sweep failed")

    def run(self, job_id: str) -> str:
        """Claim ``job_id`` if it is still queued and run it to a terminal state (or, when
        interrupted, back to the queue with a new message)."""
        if self._interrupted:
            state = self.store.get(job_id).state
            if state == "queued":
                self._dispatcher().submit(job_id)
                log.warning("job %s left for another worker: %s", job_id, self._interrupted)
            return state
        job = self.store.claim_next(self.identity, only=[job_id])
        if job is None:
            state = self.store.get(job_id).state
            log.info("job %s is %s; message dropped", job_id, state)
            return state
        self._current = [job_id]
        try:
            self.runner(job, self._claim_ids)
        finally:
            if self._interrupted:  # only an interrupt puts a job back in the queue
                for sent in self.rescue():
                    log.warning("job %s dispatched again after going back to the queue", sent)
            self._current = []
        return self.store.get(job_id).state

    def _claim_ids(self, ids: list[str]) -> list[Any]:
        claimed = [j for j in (self.store.claim_next(self.identity, only=[i]) for i in ids) if j is not None]
        self._current.extend(j.id for j in claimed)
        return claimed


_runtime: WorkerRuntime | None = None


def runtime(settings: Settings | None = None) -> WorkerRuntime:
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime(settings or Settings())
    return _runtime


def worker_app(settings: Settings) -> Celery:
    """The Celery app with the ``run_job`` task bound to this process's runtime."""
    app = make_celery(settings)

    @app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(self: Any, job_id: str) -> str:
        return runtime(settings).run(job_id)

    return app
