"""``CeleryDispatcher``: hands job ids to Celery workers through Redis (the API's side)."""

from __future__ import annotations

from celery import Celery

from genaccel.settings import Settings
from genaccel.store.base import Store
from workers.celery_app import TASK, celery_priority, make_celery, queue_for


class CeleryDispatcher:
    """Sends one message per queued job; the job record is already in the store."""

    def __init__(self, settings: Settings, store: Store, app: Celery | None = None) -> None:
        self.settings, self.store = settings, store
        self.app = app or make_celery(settings)

    def start(self) -> None:
        """Nothing to start here: `genaccel worker` processes take the jobs."""

    def submit(self, job_id: str) -> None:
        job = self.store.get(job_id)
        queue = queue_for(job.request.model, job.request.modality, self.settings)
        self.app.send_task(TASK, args=[job_id], queue=queue, priority=celery_priority(job.priority))

    def stop(self, *, drain: bool = False, timeout: float | None = None) -> None:
        self.app.close()
