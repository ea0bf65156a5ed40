from __future__ import annotations

import threading
import time
from pathlib import Path

from genaccel.queue.local import LocalDispatcher
from genaccel.spec import Job, JobRequest
from genaccel.store.sqlite import SQLiteStore


def wait_done(store: SQLiteStore, ids: list[str], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not all(store.get(i).done for i in ids):
        assert time.monotonic() < end, "jobs did not finish"
        time.sleep(0.01)


def test_runs_in_priority_order_and_survives_runner_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    order: list[str] = []
    gate = threading.Event()

    def runner(job: Job, claim: object = None) -> None:
        gate.wait(5)
        order.append(job.request.prompt)
        if job.request.prompt == "boom":
            store.finish(job.id, "failed")
            raise RuntimeError("runner bug")
        store.finish(job.id, "succeeded")

    ids = [store.create(JobRequest.from_flat({"prompt": p, "priority": pr})).id
           for p, pr in [("first", 5), ("boom", 7), ("low", 0), ("urgent", 9)]]
    disp = LocalDispatcher(store, runner, poll_s=0.05)
    disp.start()
    gate.set()
    wait_done(store, ids)
    disp.stop()
    # the thread claimed "urgent" or whatever was most urgent first, then continued past the crash
    assert order == ["urgent", "boom", "first", "low"]


def test_scope_limits_what_runs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    other = store.create(JobRequest(prompt="someone else's"))
    mine = store.create(JobRequest(prompt="mine"))
    disp = LocalDispatcher(store, lambda job, claim=None: store.finish(job.id, "succeeded"), scope=[], poll_s=0.05)
    disp.start()
    disp.submit(mine.id)
    wait_done(store, [mine.id])
    disp.stop()
    assert store.get(other.id).state == "queued"


def test_stop_with_drain_finishes_queue(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    ids = [store.create(JobRequest(prompt=str(i))).id for i in range(3)]
    disp = LocalDispatcher(store, lambda job, claim=None: store.finish(job.id, "succeeded"), poll_s=0.05)
    disp.start()
    disp.stop(drain=True, timeout=10)
    assert all(store.get(i).state == "succeeded" for i in ids)
