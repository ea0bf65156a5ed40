#!/usr/bin/env python
"""Service overhead benchmark (issue 6 targets): jobs per second submitted and completed with the
``noop`` model, embedded (SQLite + threads) and distributed (Redis + Celery, 1, 2, 4... worker
processes), and p50/p95 submit-to-start latency on an idle queue.

    python bench/service.py --jobs 1000 --json bench/results/service.json
    python bench/service.py --jobs 200 --workers 1,2,4 --model tiny-sd --steps 2 \
        --json bench/results/service-scaling.json      # how throughput grows with workers

With ``noop`` what is measured is the service itself; with a model that computes, each worker
process takes one CPU core's worth of torch threads, so on an N-core machine throughput stops
growing at N workers.

Needs a Redis server for the distributed rows (``--redis``, default redis://127.0.0.1:6379/15);
they are skipped with a note when none answers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genaccel.settings import Settings  # noqa: E402
from genaccel.spec import JobRequest  # noqa: E402

MODEL: dict[str, Any] = {"model": "noop"}


def request(i: int) -> JobRequest:
    return JobRequest.from_flat({"prompt": f"job {i}", **MODEL, "seed": abs(i), "cache": False})


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def embedded(jobs: int, workers: int, probes: int) -> dict[str, Any]:
    from pipelines.engine import LocalEngine

    home = Path(tempfile.mkdtemp(prefix="genaccel-bench-"))
    settings = Settings(home=home, workers=workers)
    with LocalEngine(settings, scoped=False) as engine:
        engine.wait([engine.submit(request(-1)).id])  # warm: model built, tables hot
        t0 = time.perf_counter()
        ids = [engine.submit(request(i)).id for i in range(jobs)]
        submitted = time.perf_counter() - t0
        done = engine.wait(ids, poll_s=0.01)
        total = time.perf_counter() - t0
        starts = []
        for i in range(probes):
            job = engine.wait([engine.submit(request(jobs + i)).id], poll_s=0.001)[0]
            assert job.started_at is not None
            starts.append((job.started_at - job.created_at) * 1000)
    ok = sum(j.state == "succeeded" for j in done)
    return {"shape": f"embedded (SQLite, {workers} thread(s))", "workers": workers, "model": MODEL["model"],
            "jobs": jobs, "succeeded": ok,
            "submit_per_s": round(jobs / submitted, 1), "jobs_per_s": round(jobs / total, 1),
            "submit_to_start_ms_p50": round(pct(starts, 50), 2), "submit_to_start_ms_p95": round(pct(starts, 95), 2)}


def distributed(jobs: int, workers: int, probes: int, redis_url: str) -> dict[str, Any]:
    import redis

    from genaccel.store.redis import RedisStore
    from pipelines.prepare import prepare_request
    from pipelines.registry import ModelRegistry
    from workers.dispatch import CeleryDispatcher

    tag = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="genaccel-bench-"))
    queue = f"bench-{tag}"
    model = str(MODEL["model"])
    env = {**os.environ, "GENACCEL_HOME": str(home), "GENACCEL_REDIS_URL": redis_url, "OMP_NUM_THREADS": "1",
           "GENACCEL_REDIS_PREFIX": f"bench-{tag}", "GENACCEL_ROUTES": json.dumps({model: queue})}
    settings = Settings(home=home, redis_url=redis_url, redis_prefix=f"bench-{tag}", routes={model: queue})
    store = RedisStore(redis_url, prefix=f"bench-{tag}")
    dispatcher = CeleryDispatcher(settings, store)
    registry = ModelRegistry(settings, allow_paths=False)
    procs = [subprocess.Popen([sys.executable, "-m", "genaccel.cli", "worker", "--device", f"cpu:{i}", "--queues",
                               queue, "--loglevel", "ERROR"], env=env, cwd=ROOT, start_new_session=True)
             for i in range(workers)]
    r = redis.Redis.from_url(redis_url)
    try:
        while len(list(r.scan_iter(f"bench-{tag}:worker:*"))) < workers:
            time.sleep(0.2)

        def submit(i: int) -> str:
            job = store.create(prepare_request(request(i), registry, settings)[0])
            dispatcher.submit(job.id)
            return job.id

        def wait(ids: list[str], poll: float) -> None:
            for job_id in ids:
                while not store.get(job_id).done:
                    time.sleep(poll)

        for i in range(workers * 2):  # warm: each worker builds the model once
            wait([submit(-1 - i)], 0.01)
        t0 = time.perf_counter()
        ids = [submit(i) for i in range(jobs)]
        submitted = time.perf_counter() - t0
        wait(ids, 0.005)
        total = time.perf_counter() - t0
        ok = sum(store.get(i).state == "succeeded" for i in ids)
        starts = []
        for i in range(probes):
            job_id = submit(jobs + i)
            wait([job_id], 0.001)
            job = store.get(job_id)
            assert job.started_at is not None
            starts.append((job.started_at - job.created_at) * 1000)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        for key in [*r.scan_iter(f"bench-{tag}:*"), *r.scan_iter(f"*{queue}*")]:
            r.delete(key)
    return {"shape": f"distributed (Redis + Celery, {workers} worker process{'es' if workers > 1 else ''})",
            "workers": workers, "model": model, "jobs": jobs, "succeeded": ok,
            "submit_per_s": round(jobs / submitted, 1), "jobs_per_s": round(jobs / total, 1),
            "submit_to_start_ms_p50": round(pct(starts, 50), 2), "submit_to_start_ms_p95": round(pct(starts, 95), 2)}


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| shape | model | jobs | succeeded | submitted/s | submitted+completed/s | scaling | submit→start p50 ms "
           "| p95 ms |", "|---|---|---|---|---|---|---|---|---|"]
    one = next((r["jobs_per_s"] for r in rows if r.get("workers") == 1 and r["shape"].startswith("distributed")), None)
    for r in rows:
        scaling = f"{r['jobs_per_s'] / one:.2f}x" if one and r["shape"].startswith("distributed") else "—"
        out.append(f"| {r['shape']} | {r.get('model', 'noop')} | {r['jobs']} | {r['succeeded']} | {r['submit_per_s']} "
                   f"| {r['jobs_per_s']} | {scaling} | {r['submit_to_start_ms_p50']} | {r['submit_to_start_ms_p95']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--probes", type=int, default=100, help="sequential jobs for submit-to-start latency")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/service.json")
    p.add_argument("--workers", default="2", help="worker processes of the distributed rows, e.g. 1,2,4")
    p.add_argument("--model", default="noop", help="model the jobs run (noop: the service alone)")
    p.add_argument("--steps", type=int, default=None, help="steps per job for a model that computes")
    args = p.parse_args()
    MODEL.update(model=args.model, **({"steps": args.steps} if args.steps else {}))
    rows = [embedded(args.jobs, 1, args.probes)]
    try:
        import redis

        redis.Redis.from_url(args.redis, socket_connect_timeout=1).ping()
        rows += [distributed(args.jobs, int(n), args.probes, args.redis) for n in args.workers.split(",")]
    except Exception as exc:  # a missing Redis only skips the distributed row
        print(f"distributed row skipped: {exc}", file=sys.stderr)
    record = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
