"""``genaccel jobs list|show|cancel`` on the configured store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from genaccel.commands.common import (
    Modality,
    _out,
    jobs_app,
)
from genaccel.errors import GenAccelError
from genaccel.settings import Settings

if TYPE_CHECKING:
    from genaccel.store.base import Store


RedisUrl = Annotated[str | None, typer.Option("--redis", help="Redis URL of the job store (default: "
                                               "GENACCEL_REDIS_URL; without either, the local SQLite file).")]


def _job_store(redis: str | None) -> Store:
    """The store `genaccel serve` and the workers use: Redis when configured, else SQLite."""
    settings = Settings(redis_url=redis) if redis else Settings()
    if settings.redis_url:
        from genaccel.store.redis import redis_store

        return redis_store(settings)
    from genaccel.store.sqlite import SQLiteStore

    return SQLiteStore(settings.database)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option(help="queued | running | succeeded | failed | cancelled")] = None,
    modality: Modality = None,
    limit: Annotated[int, typer.Option(help="Jobs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Cursor printed by the previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    redis: RedisUrl = None,
) -> None:
    """List jobs, newest first."""
    from genaccel.spec import MODALITIES

    states = ("queued", "running", "succeeded", "failed", "cancelled")
    if state is not None and state not in states:
        raise GenAccelError(f"--state={state!r} is invalid: no such state; fix: use one of {', '.join(states)}")
    if modality is not None and modality not in MODALITIES:
        raise GenAccelError(f"--modality={modality!r} is invalid; fix: use one of {', '.join(MODALITIES)}")
    store = _job_store(redis)
    try:
        page = store.list_jobs(state=state, modality=modality, limit=limit, cursor=cursor)  # type: ignore[arg-type]
    finally:
        store.close()
    if as_json:
        _out(json.dumps({"jobs": [j.model_dump(mode="json") for j in page.jobs], "next_cursor": page.next_cursor}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "state", "modality", "model", "progress", "prompt")
    for j in page.jobs:
        table.add_row(j.id, j.state, j.request.modality, j.request.model or "",
                      f"{j.progress.step}/{j.progress.total}", j.request.prompt[:40])
    Console().print(table)
    if page.next_cursor:
        _out(f"more: genaccel jobs list --cursor {page.next_cursor}")


@jobs_app.command("show")
def jobs_show(job_id: str, redis: RedisUrl = None) -> None:
    """Print one job as JSON."""
    store = _job_store(redis)
    try:
        _out(store.get(job_id).model_dump_json(indent=2))
    finally:
        store.close()


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, redis: RedisUrl = None) -> None:
    """Cancel a job: a queued job never starts; a running one stops at its next step."""
    store = _job_store(redis)
    try:
        job = store.cancel(job_id)
    finally:
        store.close()
    _out(f"{job.id}: {'cancelled' if job.state == 'cancelled' else 'stopping at its next step'}")
