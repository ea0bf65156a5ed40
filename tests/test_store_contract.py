"""Store contract: every test here runs on each backend (a SQLite file; Redis under a unique key prefix).

Redis tests carry the ``redis`` marker and use the server at ``GENACCEL_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/15``). Without a reachable server they skip, except when ``CI`` is set:
CI runs Redis tests for real, so there an unreachable server fails them.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from genaccel.errors import InvalidRequest, JobNotFound, JobStateConflict
from genaccel.spec import Artifact, JobError, JobRequest
from genaccel.store.base import Store
from genaccel.store.redis import RedisStore
from genaccel.store.sqlite import SQLiteStore

# Read at import: the autouse ``isolated_home`` fixture strips GENACCEL_* variables from each test.
REDIS_URL = os.environ.get("GENACCEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ELSEWHERE = f"not-{socket.gethostname()}:4242:1"
"""A worker on another machine: only its heartbeat can tell whether it still lives."""


def req(prompt: str = "a cat", priority: int = 5, modality: str = "image") -> JobRequest:
    return JobRequest.from_flat({"prompt": prompt, "priority": priority, "modality": modality})


@dataclass(frozen=True)
class Backend:
    """Where one test's store lives; picklable, so spawned processes can open the same store."""

    kind: str  # "sqlite" | "redis"
    where: str  # the SQLite file, or the Redis key prefix

    def open(self, **options: Any) -> Store:
        if self.kind == "sqlite":
            return SQLiteStore(self.where)
        return RedisStore(REDIS_URL, prefix=self.where, **options)

    def open_redis(self, **options: Any) -> RedisStore:
        return RedisStore(REDIS_URL, prefix=self.where, **options)


@functools.cache
def _redis_problem() -> str | None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"no Redis server answers at {REDIS_URL} ({exc}); start one or set GENACCEL_TEST_REDIS_URL"
    finally:
        client.close()
    return None


def _redis_backend() -> Iterator[Backend]:
    problem = _redis_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs Redis tests for real: {problem}")
        pytest.skip(problem)
    prefix = f"genaccel-test-{uuid.uuid4().hex[:12]}"
    yield Backend("redis", prefix)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "jobs.db"))
    else:
        yield from _redis_backend()


@pytest.fixture
def redis_backend() -> Iterator[Backend]:
    yield from _redis_backend()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


# -- records, order, listing ----------------------------------------------------------------

def test_create_get_and_missing(store: Store) -> None:
    job = store.create(req())
    assert store.get(job.id).request.prompt == "a cat"
    assert store.get(job.id).state == "queued"
    with pytest.raises(JobNotFound, match="job 'nope' does not exist; fix: list jobs"):
        store.get("nope")


def test_create_with_a_taken_id_conflicts(store: Store) -> None:
    store.create(req("first"), job_id="abc")
    with pytest.raises(JobStateConflict, match="job abc already exists; fix: choose another id"):
        store.create(req("second"), job_id="abc")
    assert store.get("abc").request.prompt == "first"
    assert [j.id for j in store.list_jobs().jobs] == ["abc"]


def test_claim_order_is_priority_then_age(store: Store) -> None:
    low = store.create(req("low", 1))
    high_old = store.create(req("high-old", 8))
    high_new = store.create(req("high-new", 8))
    order = [store.claim_next("w").id for _ in range(3)]
    assert order == [high_old.id, high_new.id, low.id]
    assert store.claim_next("w") is None


def test_claim_marks_running_and_counts_attempts(store: Store) -> None:
    store.create(req())
    claimed = store.claim_next("host:1:1")
    assert claimed and claimed.state == "running" and claimed.attempts == 1 and claimed.worker == "host:1:1"
    assert claimed.started_at is not None
    assert store.get(claimed.id) == claimed


def test_claim_scope(store: Store) -> None:
    a = store.create(req("a", 9))
    b = store.create(req("b", 1))
    assert store.claim_next("w", only=[b.id]).id == b.id
    assert store.claim_next("w", only=[]) is None
    assert store.claim_next("w", only=["missing", b.id]) is None  # b is running, not queued
    assert store.get(a.id).state == "queued"


def test_list_filters_and_paginates(store: Store) -> None:
    made = [store.create(req(str(i), modality="image")).id for i in range(5)]
    video = store.create(req("v", modality="video"))
    page = store.list_jobs(limit=2)
    assert [j.id for j in page.jobs] == [video.id, made[4]]
    seen = [j.id for j in page.jobs]
    while page.next_cursor:
        page = store.list_jobs(limit=2, cursor=page.next_cursor)
        seen += [j.id for j in page.jobs]
    assert seen == [video.id, *reversed(made)]
    assert [j.id for j in store.list_jobs(modality="video").jobs] == [video.id]
    store.claim_next("w")
    assert [j.id for j in store.list_jobs(state="running").jobs] == [made[0]]
    assert [j.id for j in store.list_jobs(state="queued", modality="image").jobs] == list(reversed(made[1:]))
    assert store.list_jobs(state="running", modality="video").jobs == []


def test_list_rejects_a_cursor_it_did_not_give_out(store: Store) -> None:
    with pytest.raises(InvalidRequest, match="cursor='x1' is invalid: is not a cursor this server gave out"):
        store.list_jobs(cursor="x1")


def test_owner_filters_counts_and_queue_position(store: Store) -> None:
    a1 = store.create(req("a1"), owner="alice")
    b1 = store.create(req("b1", 9), owner="bob")
    a2 = store.create(req("a2"), owner="alice")
    local = store.create(req("local"))
    assert [j.id for j in store.list_jobs(owner="alice").jobs] == [a2.id, a1.id]
    assert store.get(a1.id).owner == "alice" and store.get(local.id).owner is None
    assert store.count() == 4 and store.count(owner="alice") == 2 and store.count(state="queued", owner="bob") == 1
    assert [store.queue_position(j.id) for j in (b1, a1, a2, local)] == [0, 1, 2, 3]
    store.claim_next("w")  # b1, the most urgent
    assert store.queue_position(b1.id) is None and store.queue_position(a1.id) == 0
    assert store.count(state="running") == 1 and store.count(state="running", owner="alice") == 0
    assert [j.id for j in store.list_jobs(owner="alice", state="queued", modality="image").jobs] == [a2.id, a1.id]
    with pytest.raises(JobNotFound):
        store.queue_position("nope")


def test_stats_counts_states_and_recent_latencies(store: Store) -> None:
    done = store.create(req())
    store.create(req())
    gone = store.create(req())
    store.claim_next("host:7:1")
    store.finish(done.id, "succeeded")
    store.cancel(gone.id)  # never started: no latency
    stats = store.stats()
    assert stats.counts == {"queued": 1, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 1}
    assert len(stats.latencies) == 1 and stats.latencies[0] >= 0
    assert list(stats.busy_s) == ["host:7"]


# -- running a job --------------------------------------------------------------------------

def test_progress_finish_and_metadata(store: Store) -> None:
    job = store.create(req())
    store.claim_next("w")
    assert store.set_progress(job.id, 2, 10) is False
    store.update_metadata(job.id, {"scheduler": "DDIM"})
    store.update_metadata(job.id, {"warnings": ["w1"]})
    art = Artifact(name="a.png", path="/tmp/a.png", media_type="image/png")
    done = store.finish(job.id, "succeeded", artifacts=[art], timings={"run_s": 1.0})
    assert done.state == "succeeded" and done.artifacts == [art] and done.timings["run_s"] == 1.0
    assert done.progress.step == 2 and done.metadata == {"scheduler": "DDIM", "warnings": ["w1"]} and done.finished_at
    assert store.get(job.id) == done
    with pytest.raises(JobStateConflict, match="already succeeded"):
        store.finish(job.id, "failed", error=JobError(code="x", message="y"))
    with pytest.raises(JobNotFound):
        store.set_progress("nope", 1, 2)


def test_cancel_queued_running_and_finished(store: Store) -> None:
    queued = store.create(req())
    assert store.cancel(queued.id).state == "cancelled"
    assert store.claim_next("w") is None  # a cancelled job never starts
    running = store.create(req())
    store.claim_next("w")
    assert store.cancel(running.id).state == "running"
    assert store.set_progress(running.id, 1, 5) is True  # the worker sees the flag at the next step
    store.finish(running.id, "cancelled")
    with pytest.raises(JobStateConflict, match="already cancelled and cannot be cancelled"):
        store.cancel(running.id)
    assert [j.id for j in store.list_jobs(state="cancelled").jobs] == [running.id, queued.id]


def test_requeue(store: Store) -> None:
    job = store.create(req())
    store.claim_next("w")
    assert store.requeue(job.id, "shutdown").state == "queued"
    assert store.get(job.id).metadata["requeued"] == ["shutdown"]
    again = store.claim_next("w2")
    assert again and again.id == job.id and again.attempts == 2
    store.finish(job.id, "succeeded")
    with pytest.raises(JobStateConflict, match="only a running job"):
        store.requeue(job.id, "again")


def test_a_worker_whose_claim_lapsed_cannot_finish_or_requeue_the_job(store: Store) -> None:
    job = store.create(req())
    first = store.claim_next("w1:1")
    assert first is not None and first.worker == "w1:1"
    store.requeue(job.id, "worker w1 presumed dead")  # the sweep, while w1 still runs it
    with pytest.raises(JobStateConflict, match=f"job {job.id} is queued, not by w1:1; this worker cannot make"):
        store.finish(job.id, "succeeded", worker="w1:1")
    second = store.claim_next("w2:1")
    assert second is not None and second.worker == "w2:1"
    with pytest.raises(JobStateConflict, match="is run by w2:1, not by w1:1"):
        store.finish(job.id, "succeeded", worker="w1:1")
    with pytest.raises(JobStateConflict, match="cannot re-queue it"):
        store.requeue(job.id, "shutdown", worker="w1:1")
    assert store.finish(job.id, "succeeded", worker="w2:1").state == "succeeded"


def test_result_keys_are_remembered_and_replaced(store: Store) -> None:
    assert store.lookup_result("k1") is None
    store.remember_result("k1", "job-a")
    store.remember_result("k1", "job-b")  # the newest success for the same request
    assert store.lookup_result("k1") == "job-b" and store.lookup_result("k2") is None


def test_a_second_store_on_the_same_place_sees_the_jobs(backend: Backend) -> None:
    first = backend.open()
    job = first.create(req("kept"))
    first.claim_next("w")
    first.close()
    second = backend.open()
    try:
        assert second.get(job.id).request.prompt == "kept" and second.get(job.id).state == "running"
        assert [j.id for j in second.list_jobs(state="running").jobs] == [job.id]
    finally:
        second.close()


# -- concurrency ----------------------------------------------------------------------------

def test_concurrent_claims_from_threads_never_share_a_job(store: Store) -> None:
    ids = {store.create(req(str(i))).id for i in range(40)}
    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim_next(name)) is not None:
            with lock:
                got.append((job.id, name))

    threads = [threading.Thread(target=worker, args=(f"thread-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(job_id for job_id, _ in got) == sorted(ids)
    for job_id, name in got:
        job = store.get(job_id)
        assert job.state == "running" and job.attempts == 1 and job.worker == name


def _claim_in_process(backend: Backend, name: str, ready: Any, out: Any) -> None:
    """Child process: wait for the others, then claim until the queue is empty."""
    try:
        store = backend.open()
        try:
            ready.wait(timeout=60)
            got = []
            while (job := store.claim_next(name)) is not None:
                got.append(job.id)
            out.put((name, got))
        finally:
            store.close()
    except BaseException as exc:
        out.put((name, f"{type(exc).__name__}: {exc}"))
        raise


def test_concurrent_claims_from_processes_never_share_a_job(backend: Backend, store: Store) -> None:
    ids = {store.create(req(str(i))).id for i in range(60)}
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(3)
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(backend, f"proc-{i}", ready, out)) for i in range(3)]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(isinstance(got, list) for got in results.values()), results
    claimed = [job_id for got in results.values() for job_id in got]
    assert sorted(claimed) == sorted(ids)  # each job exactly once
    for name, got in results.items():
        for job_id in got:
            job = store.get(job_id)
            assert job.state == "running" and job.attempts == 1 and job.worker == name
    assert all(p.exitcode == 0 for p in procs)


# -- recovery -------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_requeues_jobs_of_dead_workers_then_fails_them(store: Store) -> None:
    dead = f"{socket.gethostname()}:{_dead_pid()}:1"
    job = store.create(req())
    store.claim_next(dead)
    (rec,) = store.recover(max_attempts=2)
    assert rec.action == "requeued" and rec.job_id == job.id and store.get(job.id).state == "queued"
    assert "died during attempt 1 of 2" in store.get(job.id).metadata["requeued"][0]
    assert store.get(job.id).worker is None
    store.claim_next(dead)
    (rec,) = store.recover(max_attempts=2)
    failed = store.get(job.id)
    assert rec.action == "failed" and failed.state == "failed" and failed.error
    assert failed.error.code == "worker_lost"
    assert "died on each of 2 attempts" in failed.error.message
    assert store.recover(max_attempts=2) == []


def test_recover_cancels_a_job_whose_worker_died_after_a_cancel_request(store: Store) -> None:
    job = store.create(req())
    store.claim_next(f"{socket.gethostname()}:{_dead_pid()}:1")
    store.cancel(job.id)
    (rec,) = store.recover(max_attempts=2)
    assert rec.action == "cancelled" and store.get(job.id).state == "cancelled"


def test_recover_leaves_live_workers_alone(store: Store) -> None:
    here = store.create(req())
    store.claim_next(f"{socket.gethostname()}:{os.getpid()}:1")
    there = store.create(req())
    store.claim_next(ELSEWHERE)  # Redis: its heartbeat is fresh; SQLite: cannot tell, so trusts it
    assert store.recover(max_attempts=2) == []
    assert store.get(here.id).state == "running" and store.get(there.id).state == "running"


# -- Redis heartbeats -----------------------------------------------------------------------

@pytest.mark.redis
def test_recover_requeues_when_the_heartbeat_expires_then_fails(redis_backend: Backend) -> None:
    worker = redis_backend.open_redis(heartbeat_ttl_s=0.2)
    server = redis_backend.open_redis(heartbeat_ttl_s=0.2)
    try:
        job = worker.create(req())
        worker.claim_next(ELSEWHERE)
        assert server.recover(max_attempts=2) == []  # fresh heartbeat
        time.sleep(0.35)
        (rec,) = server.recover(max_attempts=2)
        assert rec.action == "requeued" and "died during attempt 1 of 2 (its heartbeat expired)" in rec.reason
        assert server.get(job.id).state == "queued" and server.queue_position(job.id) == 0
        assert worker.claim_next(ELSEWHERE).attempts == 2
        time.sleep(0.35)
        (rec,) = server.recover(max_attempts=2)
        failed = server.get(job.id)
        assert rec.action == "failed" and failed.state == "failed" and failed.error
        assert failed.error.code == "worker_lost" and "died on each of 2 attempts" in failed.error.message
    finally:
        worker.close()
        server.close()


@pytest.mark.redis
def test_heartbeats_and_progress_keep_a_job_alive(redis_backend: Backend) -> None:
    worker = redis_backend.open_redis(heartbeat_ttl_s=0.3)
    server = redis_backend.open_redis(heartbeat_ttl_s=0.3)
    try:
        job = worker.create(req())
        worker.claim_next(ELSEWHERE)
        for _ in range(4):  # 0.6 s in all, twice the TTL
            time.sleep(0.15)
            worker.heartbeat(ELSEWHERE)
        assert server.recover(max_attempts=1) == [] and server.worker_alive(ELSEWHERE)
        for step in range(4):
            time.sleep(0.15)
            worker.set_progress(job.id, step, 4)
        assert server.recover(max_attempts=1) == []
        assert server.get(job.id).state == "running"
        time.sleep(0.45)
        assert not server.worker_alive(ELSEWHERE)
        (rec,) = server.recover(max_attempts=1)
        assert rec.action == "failed"
    finally:
        worker.close()
        server.close()


@pytest.mark.redis
def test_redis_keys_stay_under_the_prefix(redis_backend: Backend) -> None:
    store = redis_backend.open_redis()
    try:
        job = store.create(req())
        store.claim_next("w")
        store.finish(job.id, "succeeded")
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            keys = set(client.scan_iter(match=f"{redis_backend.where}:*"))
        finally:
            client.close()
        assert f"{redis_backend.where}:job:{job.id}" in keys and f"{redis_backend.where}:worker:w" in keys
        assert f"{redis_backend.where}:queue" not in keys  # emptied sorted sets vanish
    finally:
        store.close()
