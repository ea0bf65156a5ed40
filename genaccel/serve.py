"""``genaccel serve``: build the backend for the chosen shape, run the API with uvicorn, and shut
down gracefully (running jobs get ``grace_s`` to finish, then go back to the queue)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from genaccel.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from genaccel.service import Backend

log = logging.getLogger(__name__)


def build_backend(settings: Settings):  # type: ignore[no-untyped-def]
    """``(backend, stop)`` for the embedded shape (SQLite + threads) or, with ``settings.redis_url``,
    the distributed one (Redis store + Celery dispatch; run `genaccel worker` for the workers)."""
    from genaccel.service import Backend
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
        if engine.dispatcher.busy:
            engine.runner.interrupt("server shut down before the job finished")  # back to the queue at the next step
            engine.dispatcher.stop(timeout=60)
        engine.store.close()

    return Backend(settings, engine.store, engine.dispatcher, registry), stop


def _server_class():  # type: ignore[no-untyped-def]
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM after its shutdown, which would kill the process before
        the jobs are put away; this one only asks the server to exit."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    return Server


def mount_web_ui(app: FastAPI, backend: Backend, log: Callable[[str], None] = print) -> bool:
    """Mount the Gradio web UI at ``/ui``; without Gradio installed, say so and serve the API alone."""
    try:
        from ui.app import mount_ui
    except ImportError as exc:
        log(f"genaccel: web UI off ({exc}); fix: pip install gradio")
        return False
    mount_ui(app, backend, "/ui")
    return True


def run_server(settings: Settings, host: str, port: int, *, grace_s: float = 30.0,
               log: Callable[[str], None] = print, ui: bool = True) -> None:
    import uvicorn

    from genaccel.api import create_app

    _Server = _server_class()

    backend, stop = build_backend(settings)
    app = create_app(backend)
    with_ui = ui and mount_web_ui(app, backend, log)
    shape = f"Redis store at {settings.redis_url}, Celery workers" if settings.redis_url else \
        f"SQLite store {settings.database}, {settings.workers} embedded worker(s)"
    log(f"genaccel: serving http://{host}:{port} ({shape}); API docs at /docs"
        + ("; web UI at /ui" if with_ui else ""))
    if not settings.api_keys:
        log("genaccel: no API keys configured: listening on this machine only, every caller sees every job")
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    try:
        server.run()
    finally:
        log(f"genaccel: shutting down: running jobs get {grace_s:.0f} s to finish")
        stop(grace_s)
