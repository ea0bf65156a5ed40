#!/usr/bin/env python
"""Service caches on the embedded default (issue 19 targets): the latency of an identical
request answered by the result cache (submit to succeeded, through the REST API in process),
against the same request run, and the prompt cache's hits for a repeated prompt with new seeds.

    python bench/service_caches.py --model shapes-sd --repeats 20 --json bench/results/service-caches.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastapi.testclient import TestClient  # noqa: E402

from genaccel.api import Backend, create_app  # noqa: E402
from genaccel.settings import Settings  # noqa: E402
from pipelines.engine import LocalEngine  # noqa: E402
from pipelines.registry import ModelRegistry  # noqa: E402


def wait(client: TestClient, job_id: str) -> dict[str, object]:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="shapes-sd")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/service-caches.json")
    a = p.parse_args()
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="genaccel-caches-")), rate_limit_per_min=0)
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    client = TestClient(create_app(Backend(settings, engine.store, engine.dispatcher,
                                           ModelRegistry(settings, allow_paths=False))))
    body = {"model": a.model, "prompt": "a blue circle on a white background", "seed": 7}
    t0 = time.perf_counter()
    first = wait(client, client.post("/v1/jobs", json=body).json()["id"])
    run_s = time.perf_counter() - t0
    hits = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        job = client.post("/v1/jobs", json=body).json()
        assert job["state"] == "succeeded", job
        hits.append(time.perf_counter() - t)
    seeds = [wait(client, client.post("/v1/jobs", json={**body, "seed": 100 + i}).json()["id"]) for i in range(3)]
    metrics = [line for line in client.get("/metrics").text.splitlines() if line.startswith("genaccel_cache")]
    engine.dispatcher.stop(timeout=30)
    out = {
        "command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": a.model, "first_run_s": round(run_s, 3),
        "identical_request_ms": {"median": round(statistics.median(hits) * 1000, 2),
                                 "max": round(max(hits) * 1000, 2), "n": len(hits)},
        "speedup": round(run_s / statistics.median(hits), 1),
        "first_prompt_cache": first["metadata"].get("prompt_cache"),
        "new_seed_prompt_cache": [j["metadata"].get("prompt_cache") for j in seeds],
        "metrics": metrics,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
