"""Dispatchers hand queued job ids to workers: ``LocalDispatcher`` (threads) lives here; the
Celery one lives in ``workers/``."""

from genaccel.queue.base import Dispatcher, JobRunner
from genaccel.queue.local import LocalDispatcher

__all__ = ["Dispatcher", "JobRunner", "LocalDispatcher"]
