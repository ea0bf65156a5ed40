"""``genaccel serve``, ``genaccel worker`` and ``genaccel keys``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genaccel.commands.common import (
    _err,
    _out,
    _quiet_libraries,
    app,
)
from genaccel.errors import GenAccelError
from genaccel.settings import Settings

if TYPE_CHECKING:
    pass


keys_app = typer.Typer(help="API keys for `genaccel serve`.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new() -> None:
    """Print a new API key and the digest to add to GENACCEL_API_KEYS (only the digest is stored)."""
    from genaccel.service.auth import new_key

    key, digest = new_key()
    _out(f"key:    {key}\ndigest: {digest}")
    _err("genaccel: give the key to its user; put the digest in GENACCEL_API_KEYS (a JSON list) on the server")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1; 0.0.0.0 "
                                                  "only with API keys configured).")] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL: store jobs in Redis and run them "
                                                               "on Celery workers (`genaccel worker`).")] = None,
    workers: Annotated[int | None, typer.Option(help="Embedded worker threads (without --redis).")] = None,
    grace: Annotated[float, typer.Option(help="Seconds running jobs get to finish on shutdown before they "
                                              "go back to the queue.")] = 30.0,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Mount the web UI at /ui.")] = True,
) -> None:
    """Run the REST API (and an embedded worker unless --redis is given)."""
    _quiet_libraries()
    logging.getLogger("genaccel").setLevel(logging.INFO)
    from genaccel.serve import run_server

    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["workers"] = workers
    if redis:
        overrides["redis_url"] = redis
    settings = Settings(**overrides)
    if host is None:
        host = "127.0.0.1"
    elif host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        raise GenAccelError(f"--host {host} would expose the API without keys; fix: set GENACCEL_API_KEYS "
                            "(see `genaccel keys new`) or listen on 127.0.0.1")
    run_server(settings, host, port, grace_s=grace, log=_err, ui=ui)


@app.command()
def worker(
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL (default: GENACCEL_REDIS_URL).")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="cpu, cpu:1, cuda:0, ... (repeatable; one "
                                                                       "worker process each; a device already "
                                                                       "served on this host is refused).")] = None,
    queues: Annotated[str, typer.Option("--queues", help="Comma-separated Celery queues: modalities "
                                                          "(image, video, ...) or routes' names.")] = "image",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run Celery workers for `genaccel serve --redis`: one process per device, one job at a time each;
    they end with this process, however it ends."""
    from workers.main import launch

    url = redis or Settings().redis_url
    if not url:
        raise GenAccelError("no Redis URL; fix: pass --redis redis://HOST:6379/0 or set GENACCEL_REDIS_URL")
    devices = device or [_default_device()]
    raise typer.Exit(launch(url, devices, [q.strip() for q in queues.split(",") if q.strip()], loglevel))


def _default_device() -> str:
    """cuda:0 when the driver reports a GPU (asked of nvidia-smi, so the launcher never initialises
    CUDA itself), else cpu."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        if found.strip():
            return "cuda:0"
    return "cpu"
