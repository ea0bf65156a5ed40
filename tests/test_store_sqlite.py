"""Store contract, run on the SQLite backend (the Redis backend will join this suite)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from genaccel.errors import JobNotFound, JobStateConflict
from genaccel.spec import Artifact, JobError, JobRequest
from genaccel.store.sqlite import SQLiteStore


def req(prompt: str = "a cat", priority: int = 5, modality: str = "image") -> JobRequest:
    return JobRequest.from_flat({"prompt": prompt, "priority": priority, "modality": modality})


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_create_get_and_missing(store: SQLiteStore) -> None:
    job = store.create(req())
    assert store.get(job.id).request.prompt == "a cat"
    assert store.get(job.id).state == "queued"
    with pytest.raises(JobNotFound, match="job 'nope' does not exist; fix: list jobs"):
        store.get("nope")


def test_claim_order_is_priority_then_age(store: SQLiteStore) -> None:
    low = store.create(req("low", 1))
    high_old = store.create(req("high-old", 8))
    high_new = store.create(req("high-new", 8))
    order = [store.claim_next("w").id for _ in range(3)]
    assert order == [high_old.id, high_new.id, low.id]
    assert store.claim_next("w") is None


def test_claim_marks_running_and_counts_attempts(store: SQLiteStore) -> None:
    store.create(req())
    claimed = store.claim_next("host:1:1")
    assert claimed and claimed.state == "running" and claimed.attempts == 1 and claimed.worker == "host:1:1"
    assert claimed.started_at is not None


def test_claim_scope(store: SQLiteStore) -> None:
    a = store.create(req("a", 9))
    b = store.create(req("b", 1))
    assert store.claim_next("w", only=[b.id]).id == b.id
    assert store.claim_next("w", only=[]) is None
    assert store.get(a.id).state == "queued"


def test_concurrent_claims_never_share_a_job(store: SQLiteStore) -> None:
    ids = {store.create(req(str(i))).id for i in range(40)}
    got: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (job := store.claim_next("w")) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


def test_list_filters_and_paginates(store: SQLiteStore) -> None:
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


def test_progress_finish_and_metadata(store: SQLiteStore) -> None:
    job = store.create(req())
    store.claim_next("w")
    assert store.set_progress(job.id, 2, 10) is False
    store.update_metadata(job.id, {"scheduler": "DDIM"})
    art = Artifact(name="a.png", path="/tmp/a.png", media_type="image/png")
    done = store.finish(job.id, "succeeded", artifacts=[art], timings={"run_s": 1.0})
    assert done.state == "succeeded" and done.artifacts == [art] and done.timings["run_s"] == 1.0
    assert done.progress.step == 2 and done.metadata["scheduler"] == "DDIM" and done.finished_at
    with pytest.raises(JobStateConflict, match="already succeeded"):
        store.finish(job.id, "failed", error=JobError(code="x", message="y"))


def test_cancel_queued_running_and_finished(store: SQLiteStore) -> None:
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


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SQLiteStore(path)
    job = first.create(req("kept"))
    first.close()
    assert SQLiteStore(path).get(job.id).request.prompt == "kept"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_requeues_jobs_of_dead_workers_then_fails_them(store: SQLiteStore) -> None:
    import socket

    dead = f"{socket.gethostname()}:{_dead_pid()}:1"
    job = store.create(req())
    store.claim_next(dead)
    (rec,) = store.recover(max_attempts=2)
    assert rec.action == "requeued" and store.get(job.id).state == "queued"
    assert "died during attempt 1 of 2" in store.get(job.id).metadata["requeued"][0]
    store.claim_next(dead)
    (rec,) = store.recover(max_attempts=2)
    failed = store.get(job.id)
    assert rec.action == "failed" and failed.state == "failed" and failed.error
    assert failed.error.code == "worker_lost"
    assert "died on each of 2 attempts" in failed.error.message


def test_recover_leaves_live_workers_alone(store: SQLiteStore) -> None:
    import os
    import socket

    job = store.create(req())
    store.claim_next(f"{socket.gethostname()}:{os.getpid()}:1")
    assert store.recover(max_attempts=2) == []
    assert store.get(job.id).state == "running"


def test_requeue(store: SQLiteStore) -> None:
    job = store.create(req())
    store.claim_next("w")
    assert store.requeue(job.id, "shutdown").state == "queued"
    with pytest.raises(JobStateConflict, match="only a running job"):
        store.requeue(job.id, "again")
