"""Redis job store for the distributed shape: many servers and GPU workers on many machines.

Why our own: Celery's Redis result backend keeps one state string per task id with no queue order,
no listing, no filters and no attempt counter; RQ and huey own their queues and cannot hold our
``Job`` records or our cancel / re-queue / recovery rules. No well-kept library gives a job store
with these semantics, so this module implements the ``Store`` protocol on plain redis-py and passes
the same contract test suite as ``SQLiteStore`` (``tests/test_store_contract.py``).

Key layout (``P`` is the ``prefix``; ``S`` a state, ``M`` a modality):

- ``P:seq``: counter (``INCR``) giving each job its creation order, like SQLite's ``seq``.
- ``P:job:<id>``: hash ``{data: Job JSON, seq}``; ``data`` is ``Job.model_dump_json()``.
- ``P:idx:all`` and ``P:idx[:state:S][:modality:M][:owner:O]`` (one per combination of filters a
  job matches): sorted sets of job ids scored by ``seq``, read newest first by ``list_jobs`` and
  counted by ``count``; the cursor is a ``seq``.
- ``P:queue``: sorted set of queued ids scored ``(9 - priority) * 1e12 + seq``, so its lowest score
  is the most urgent, then oldest, job; ``queue_position`` is a ``ZRANK`` in it.
- ``P:finished``: sorted set of finished ids scored by ``finished_at``, for ``stats``.
- ``P:worker:<worker>``: heartbeat of a worker, expiring after ``heartbeat_ttl_s``.

Every write is a ``WATCH``/``MULTI`` transaction on the job's key that rewrites the JSON and its
index entries together, so a claim, a cancel and a progress update can race from several processes
and only one of two conflicting writes lands (the other re-reads and retries). ``list_jobs`` reads
an index and the records in one Lua script, so a page is a consistent snapshot. The scripts touch
keys built from the prefix; on Redis Cluster pass a hash-tagged prefix such as ``"{genaccel}"``.

Liveness: a worker's ``host:pid:thread`` is not enough across machines, so workers heartbeat.
``claim_next`` and ``set_progress`` refresh the heartbeat; a worker that can spend longer than
``heartbeat_ttl_s`` between steps (loading a model) must call ``heartbeat`` from a background
thread every ``heartbeat_ttl_s / 3`` or so. ``recover`` treats a running job as orphaned when its
worker's heartbeat key has expired, or when ``owner_is_dead`` says its process on this host is gone.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from genaccel.errors import InvalidRequest, JobNotFound, JobStateConflict
from genaccel.settings import Settings
from genaccel.spec import Artifact, Job, JobError, JobRequest, JobState, Modality, Progress
from genaccel.store.base import LATENCY_WINDOW, JobPage, Recovery, StoreStats, owner_is_dead, recent_stats
from genaccel.store.transitions import cancelled, finished, requeued

PRIORITY_BAND = 1e12
"""Queue score step between priorities; ``seq`` must stay below it (a trillion jobs)."""

_LIST_SCRIPT = """
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, tonumber(ARGV[2]), 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
    out[#out + 1] = rows[i + 1]
    out[#out + 1] = redis.call('HGET', ARGV[3] .. rows[i], 'data')
end
return out
"""


def queue_score(priority: int, seq: int) -> float:
    """Sorted-set score of a queued job: higher priority first, then older (lower ``seq``)."""
    return (9 - priority) * PRIORITY_BAND + seq


class RedisStore:
    """``Store`` backed by a Redis server shared by every server and worker.

    Args:
        url: a redis-py URL, e.g. ``redis://host:6379/0`` or ``rediss://...`` for TLS.
        prefix: every key starts with ``prefix:``; stores with different prefixes never meet.
        heartbeat_ttl_s: seconds a worker counts as alive after its last heartbeat.

    Example:
        >>> store = RedisStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> job = store.create(JobRequest(prompt="a red circle"))  # doctest: +SKIP
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "genaccel", heartbeat_ttl_s: float = 30.0,
    ) -> None:
        if heartbeat_ttl_s <= 0:
            raise ValueError(f"heartbeat_ttl_s={heartbeat_ttl_s} must be > 0; fix: pass seconds such as 30")
        self.url = url
        self.prefix = prefix
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self._redis: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
        self._list_script = self._redis.register_script(_LIST_SCRIPT)

    # -- keys ------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _job_key(self, job_id: str) -> str:
        return self._key("job", job_id)

    def _worker_key(self, worker: str) -> str:
        return self._key("worker", worker)

    def _index(self, state: str | None = None, modality: str | None = None, owner: str | None = None) -> str:
        """The sorted set of the jobs matching these filters (``None``: any)."""
        parts = [part for name, value in (("state", state), ("modality", modality), ("owner", owner))
                 if value is not None for part in (name, value)]
        return self._key("idx", *parts) if parts else self._key("idx", "all")

    def _indexes(self, job: Job) -> set[str]:
        """Every index ``job`` belongs to: one per subset of its (state, modality, owner)."""
        attrs: list[tuple[str, str | None]] = [("state", job.state), ("modality", job.request.modality)]
        if job.owner is not None:
            attrs.append(("owner", job.owner))
        keys = set()
        for picks in itertools.product((False, True), repeat=len(attrs)):
            chosen = {name: value for (name, value), pick in zip(attrs, picks, strict=True) if pick}
            keys.add(self._index(**chosen))
        return keys

    # -- helpers ---------------------------------------------------------------------------
    def _read(self, pipe: Pipeline, job_id: str) -> tuple[Job, int]:
        """The job and its ``seq``, read on a pipeline that is watching the job's key."""
        data, seq = cast(list[str | None], pipe.hmget(self._job_key(job_id), ["data", "seq"]))
        if data is None or seq is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(data), int(seq)

    def _write(self, pipe: Pipeline, old: Job | None, job: Job, seq: int) -> None:
        """Queue (after ``multi()``) the record and index updates that move ``old`` to ``job``."""
        pipe.hset(self._job_key(job.id), mapping={"data": job.model_dump_json(), "seq": seq})
        before = self._indexes(old) if old is not None else set()
        after = self._indexes(job)
        for key in sorted(before - after):
            pipe.zrem(key, job.id)
        for key in sorted(after - before):
            pipe.zadd(key, {job.id: seq})
        if job.state == "queued":
            pipe.zadd(self._key("queue"), {job.id: queue_score(job.priority, seq)})
        elif old is None or old.state == "queued":
            pipe.zrem(self._key("queue"), job.id)
        if job.finished_at is not None:
            pipe.zadd(self._key("finished"), {job.id: job.finished_at})
        elif old is not None and old.finished_at is not None:
            pipe.zrem(self._key("finished"), job.id)

    def _mutate(self, job_id: str, change: Callable[[Job], Job], *, refresh_worker: bool = False) -> Job:
        key = self._job_key(job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    old, seq = self._read(pipe, job_id)
                    job = change(old)
                    pipe.multi()
                    self._write(pipe, old, job, seq)
                    if refresh_worker and job.state == "running" and job.worker:
                        self._beat(pipe, job.worker)
                    pipe.execute()
                    return job
                except WatchError:
                    continue

    def _beat(self, client: redis.Redis | Pipeline, worker: str) -> None:
        client.set(self._worker_key(worker), f"{time.time():.3f}", px=max(1, round(self.heartbeat_ttl_s * 1000)))

    def _queue_head(self, ids: list[str] | None) -> str | None:
        if ids is None:
            head = cast(list[str], self._redis.zrange(self._key("queue"), 0, 0))
            return head[0] if head else None
        scores = cast(list[float | None], self._redis.zmscore(self._key("queue"), ids))
        queued = [(score, job_id) for job_id, score in zip(ids, scores, strict=True) if score is not None]
        return min(queued)[1] if queued else None

    # -- worker liveness -------------------------------------------------------------------
    def heartbeat(self, worker: str) -> None:
        """Mark ``worker`` alive for ``heartbeat_ttl_s`` more seconds."""
        self._beat(self._redis, worker)

    def worker_alive(self, worker: str | None) -> bool:
        """Whether ``worker`` has a live heartbeat and is not a dead process on this host."""
        if not worker or owner_is_dead(worker):
            return False
        return bool(self._redis.exists(self._worker_key(worker)))

    def close(self) -> None:
        self._redis.close()  # the client owns its pool (from_url), so this disconnects the pool too

    # -- Store protocol --------------------------------------------------------------------
    def create(self, request: JobRequest, *, job_id: str | None = None, output_dir: str | None = None,
               owner: str | None = None) -> Job:
        job = Job(request=request, priority=request.priority, output_dir=output_dir, owner=owner)
        if job_id:
            job = job.model_copy(update={"id": job_id})
        key = self._job_key(job.id)
        seq = cast(int, self._redis.incr(self._key("seq")))
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.exists(key):
                        raise JobStateConflict(f"job {job.id} already exists; fix: choose another id")
                    pipe.multi()
                    self._write(pipe, None, job, seq)
                    pipe.execute()
                    return job
                except WatchError:
                    continue

    def get(self, job_id: str) -> Job:
        data = cast(str | None, self._redis.hget(self._job_key(job_id), "data"))
        if data is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(data)

    def list_jobs(
        self, *, state: JobState | None = None, modality: Modality | None = None,
        limit: int = 50, cursor: str | None = None, owner: str | None = None,
    ) -> JobPage:
        start = "+inf"
        if cursor:
            if not cursor.isdigit():
                raise InvalidRequest("cursor", cursor, "is not a cursor this server gave out",
                                     "pass the next_cursor of the previous page, or none")
            start = f"({int(cursor)}"
        rows = self._newest(self._index(state or None, modality or None, owner), start, limit + 1)
        jobs = [Job.model_validate_json(data) for _, data in rows[:limit]]
        next_cursor = str(int(rows[limit - 1][0])) if len(rows) > limit else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def _newest(self, index: str, start: str, count: int) -> list[tuple[float, str]]:
        """``(score, job JSON)`` of up to ``count`` members of ``index`` scored below ``start``, highest first,
        read in one script so the page is a consistent snapshot."""
        if count <= 0:
            return []
        flat = cast(list[str | None], self._list_script(keys=[index], args=[start, count, self._key("job", "")]))
        return [(float(cast(str, flat[i])), data) for i in range(0, len(flat), 2) if (data := flat[i + 1])]

    def queue_position(self, job_id: str) -> int | None:
        with self._redis.pipeline() as pipe:  # MULTI/EXEC: both answers from the same moment
            pipe.exists(self._job_key(job_id))
            pipe.zrank(self._key("queue"), job_id)
            exists, rank = pipe.execute()
        if not exists:
            raise JobNotFound(job_id)
        return None if rank is None else int(rank)

    def count(self, *, state: JobState | None = None, owner: str | None = None) -> int:
        return int(cast(int, self._redis.zcard(self._index(state=state, owner=owner))))

    def stats(self) -> StoreStats:
        states = ("queued", "running", "succeeded", "failed", "cancelled")
        with self._redis.pipeline() as pipe:
            for state in states:
                pipe.zcard(self._index(state=state))
            counts = {state: int(n) for state, n in zip(states, pipe.execute(), strict=True)}
        newest = self._newest(self._key("finished"), "+inf", LATENCY_WINDOW)
        return recent_stats(counts, (Job.model_validate_json(data) for _, data in newest))

    def claim_next(self, worker: str, only: Iterable[str] | None = None) -> Job | None:
        ids = None if only is None else list(only)
        self.heartbeat(worker)
        if ids == []:
            return None
        with self._redis.pipeline() as pipe:
            while True:
                job_id = self._queue_head(ids)
                if job_id is None:
                    return None
                try:
                    pipe.watch(self._job_key(job_id))
                    try:
                        old, seq = self._read(pipe, job_id)
                    except JobNotFound:
                        old = None
                    if old is None or old.state != "queued":  # claimed meanwhile (or a stray queue entry)
                        pipe.multi()
                        pipe.zrem(self._key("queue"), job_id)
                        pipe.execute()
                        continue
                    job = old.model_copy(update={
                        "state": "running", "worker": worker, "attempts": old.attempts + 1,
                        "started_at": time.time(), "progress": Progress(),
                    })
                    pipe.multi()
                    self._write(pipe, old, job, seq)
                    pipe.execute()
                    return job
                except WatchError:
                    continue

    def set_progress(self, job_id: str, step: int, total: int) -> bool:
        job = self._mutate(job_id, lambda j: j.model_copy(update={"progress": Progress(step=step, total=total)}),
                           refresh_worker=True)
        return job.cancel_requested

    def remember_result(self, key: str, job_id: str) -> None:
        self._redis.hset(self._key("results"), key, job_id)

    def lookup_result(self, key: str) -> str | None:
        found = self._redis.hget(self._key("results"), key)
        return str(found) if found else None

    def update_metadata(self, job_id: str, metadata: dict[str, Any]) -> None:
        self._mutate(job_id, lambda j: j.model_copy(update={"metadata": {**j.metadata, **metadata}}))

    def finish(
        self, job_id: str, state: JobState, *, artifacts: list[Artifact] | None = None,
        error: JobError | None = None, timings: dict[str, float] | None = None, worker: str | None = None,
    ) -> Job:
        return self._mutate(job_id, lambda job: finished(job, state, artifacts, error, timings, worker))

    def cancel(self, job_id: str) -> Job:
        return self._mutate(job_id, cancelled)

    def requeue(self, job_id: str, reason: str, worker: str | None = None) -> Job:
        return self._mutate(job_id, lambda job: requeued(job, reason, worker))

    def recover(self, max_attempts: int) -> list[Recovery]:
        done: list[Recovery] = []
        running = cast(list[str], self._redis.zrange(self._index(state="running"), 0, -1))
        for job_id in running:
            recovery = self._recover_one(job_id, max_attempts)
            if recovery is not None:
                done.append(recovery)
        return done

    def _recover_one(self, job_id: str, max_attempts: int) -> Recovery | None:
        """Requeue, fail or cancel one running job if its worker is gone; ``None`` if left alone."""
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._job_key(job_id))
                    job, seq = self._read(pipe, job_id)
                    if job.state != "running":
                        return None
                    if job.worker:
                        pipe.watch(self._worker_key(job.worker))  # a heartbeat from now on aborts the write
                        if pipe.exists(self._worker_key(job.worker)) and not owner_is_dead(job.worker):
                            return None
                        how = "its process is gone" if owner_is_dead(job.worker) else "its heartbeat expired"
                    else:
                        how = "no worker was recorded"
                    new, recovery = _recovered(job, max_attempts, how)
                    pipe.multi()
                    self._write(pipe, job, new, seq)
                    pipe.execute()
                    return recovery
                except WatchError:
                    continue


def _recovered(job: Job, max_attempts: int, how: str) -> tuple[Job, Recovery]:
    """What ``recover`` makes of a running job whose worker is gone (the same rules as SQLite)."""
    if job.cancel_requested:
        job = job.model_copy(update={"state": "cancelled", "finished_at": time.time()})
        return job, Recovery(job.id, "cancelled", "its worker died after a cancel request")
    if job.attempts < max_attempts:
        reason = f"worker {job.worker} died during attempt {job.attempts} of {max_attempts} ({how})"
        notes = [*job.metadata.get("requeued", []), reason]
        job = job.model_copy(update={"state": "queued", "worker": None, "progress": Progress(),
                                     "metadata": {**job.metadata, "requeued": notes}})
        return job, Recovery(job.id, "requeued", reason)
    reason = (f"its worker died on each of {job.attempts} attempts (max_attempts={max_attempts}); "
              "not retried again; fix: check the worker log (out of memory?) and resubmit")
    job = job.model_copy(update={
        "state": "failed", "finished_at": time.time(), "error": JobError(code="worker_lost", message=reason),
    })
    return job, Recovery(job.id, "failed", reason)


def redis_store(settings: Settings) -> RedisStore:
    """The store of the distributed shape, as ``settings`` configure it."""
    if not settings.redis_url:
        raise ValueError("the distributed shape needs GENACCEL_REDIS_URL or --redis URL")
    return RedisStore(settings.redis_url, prefix=settings.redis_prefix, heartbeat_ttl_s=settings.heartbeat_s)
