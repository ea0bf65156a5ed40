"""The embedded shape in one object: SQLite store, registry, runner and worker threads.

``genaccel render`` and ``genaccel batch`` use it with a scope (only their own jobs run);
``genaccel serve`` uses it unscoped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from genaccel.events import Listener
from genaccel.queue.local import LocalDispatcher
from genaccel.settings import Settings
from genaccel.spec import Job, JobRequest
from genaccel.store.sqlite import SQLiteStore
from genaccel.webhooks import WebhookListener
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from pipelines.runner import JobRunner

log = logging.getLogger(__name__)


class LocalEngine:
    """Submit requests and run them in this process.

    Example:
        >>> with LocalEngine(Settings(), scoped=True) as engine:   # doctest: +SKIP
        ...     job = engine.submit(JobRequest(prompt="a cat"), output_dir=Path("out"))
        ...     engine.wait([job.id])
    """

    def __init__(self, settings: Settings, *, scoped: bool = True, on_event: Listener | None = None) -> None:
        """``on_event`` receives every job's lifecycle events; by default they go to the jobs' webhooks."""
        self.settings = settings
        self.store = SQLiteStore(settings.database)
        for rec in self.store.recover(settings.max_attempts):
            log.warning("job %s %s: %s", rec.job_id, rec.action, rec.reason)
        self.registry = ModelRegistry(settings)
        self.runner = JobRunner(self.store, self.registry, settings,
                                on_event=on_event if on_event is not None else WebhookListener(settings))
        self.dispatcher = LocalDispatcher(self.store, self.runner, workers=settings.workers,
                                          scope=[] if scoped else None)

    def __enter__(self) -> LocalEngine:
        self.dispatcher.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.dispatcher.stop(timeout=None if exc_type is None else 0)
        if exc_type is None:
            self.store.close()

    def prepare(self, request: JobRequest) -> JobRequest:
        """Validate and resolve (raises before anything is queued)."""
        return prepare_request(request, self.registry, self.settings)[0]

    def submit(self, request: JobRequest, *, output_dir: Path | None = None, prepared: bool = False,
               owner: str | None = None) -> Job:
        resolved = request if prepared else self.prepare(request)
        job = self.store.create(resolved, output_dir=str(output_dir.resolve()) if output_dir else None, owner=owner)
        self.dispatcher.submit(job.id)
        return job

    def adopt(self, job_id: str) -> None:
        """Run an already-queued job of this store (``batch --resume``)."""
        self.dispatcher.submit(job_id)

    def wait(self, job_ids: Iterable[str], on_update: Callable[[Job], None] | None = None,
             poll_s: float = 0.1) -> list[Job]:
        """Block until every job is finished; ``on_update`` sees each poll's state."""
        pending = list(job_ids)
        finished: dict[str, Job] = {}
        while pending:
            for job_id in list(pending):
                job = self.store.get(job_id)
                if on_update:
                    on_update(job)
                if job.done:
                    finished[job_id] = job
                    pending.remove(job_id)
            if pending:
                time.sleep(poll_s)
        return [finished[i] for i in finished]

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)
