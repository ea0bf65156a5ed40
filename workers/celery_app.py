"""The Celery app of the distributed shape: Redis broker, one job id per message.

Settings that make a queue lose nothing (see ../shared/research on Celery practice):
prefetch 1 and late acknowledgement (a message is acked only after its job finished), reject on
worker loss (a killed worker's message goes back to the broker), and a visibility timeout above
the longest allowed job, set on every transport option that has one, so Redis never hands a
running job's message to a second worker. No result backend: results live in the job store.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from genaccel.settings import Settings

TASK = "genaccel.run_job"
PRIORITY_STEPS = list(range(10))


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = int(settings.job_timeout_s + 600)
    transport = {"visibility_timeout": visibility, "queue_order_strategy": "priority",
                 "priority_steps": PRIORITY_STEPS, "sep": ":"}
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_time_limit": int(settings.job_timeout_s + 60),
        "task_soft_time_limit": int(settings.job_timeout_s),
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": None,
        "worker_hijack_root_logger": False,
        "task_default_queue": "image",
        "task_create_missing_queues": True,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ValueError("the distributed shape needs GENACCEL_REDIS_URL or --redis URL")
    app = Celery("genaccel")
    app.conf.update(celery_config(settings))
    return app


def celery_priority(priority: int) -> int:
    """Our 0..9 (higher runs sooner) -> Celery's Redis priority (0 is served first)."""
    return 9 - max(0, min(9, priority))


def queue_for(model: str | None, modality: str, settings: Settings) -> str:
    """Model routes (e.g. big models to a GPU class) win; otherwise one queue per modality."""
    return settings.routes.get(model or "", modality)
