"""``genaccel serve``: build the backend for the chosen shape, run the API with uvicorn, and shut
down gracefully (running jobs get ``grace_s`` to finish, then go back to the queue)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from genaccel.settings import Settings

log = logging.getLogger(__name__)


def build_backend(settings: Settings):  # type: ignore[no-untyped-def]
    """``(backend, stop)`` for the embedded shape (SQLite + threads) or, with ``settings.redis_url``,
    the distributed one (Redis store + Celery dispatch; run `genaccel worker` for the workers)."""
    from genaccel.api import Backend
    from pipelines.registry import ModelRegistry

    registry = ModelRegistry(settings, allow_paths=False)
    if settings.redis_url:
        from genaccel.store.redis import redis_store
        from workers.dispatch import CeleryDispatcher

        store = redis_store(settings)
        dispatcher = CeleryDispatcher(settings, store)

        def close(grace_s: float = 0.0) -> None:  # the workers own running jobs
            dispatcher.stop()
            store.close()

        return Backend(settings, store, dispatcher, registry), close
    from pipelines.engine import LocalEngine

    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()

    def stop(grace_s: float = 30.0) -> None:
        engine.dispatcher.stop(timeout=grace_s)
        for job in engine.store.list_jobs(state="running", limit=1000).jobs:
            engine.store.requeue(job.id, "server shut down before the job finished")
            log.warning("job %s went back to the queue (server shut down)", job.id)
        engine.store.close()

    return Backend(settings, engine.store, engine.dispatcher, registry), stop


def run_server(settings: Settings, host: str, port: int, *, grace_s: float = 30.0,
               log: Callable[[str], None] = print) -> None:
    import uvicorn

    from genaccel.api import create_app

    backend, stop = build_backend(settings)
    app = create_app(backend)
    shape = f"Redis store at {settings.redis_url}, Celery workers" if settings.redis_url else \
        f"SQLite store {settings.database}, {settings.workers} embedded worker(s)"
    log(f"genaccel: serving http://{host}:{port} ({shape}); API docs at /docs")
    if not settings.api_keys:
        log("genaccel: no API keys configured: listening on this machine only, every caller sees every job")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop(grace_s)
