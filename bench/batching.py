#!/usr/bin/env python
"""Batching benchmark (issue 6 target): N compatible jobs one at a time against the same jobs
batched (``GENACCEL_MAX_BATCH``), end to end through the embedded engine, and the largest pixel
difference between the two sets of images. Three runs per round: one at a time on a server that
does not batch (plain layers), one at a time with the batch-invariant layers a batching server
uses, and batched; images are compared between the last two (and the plain run, for reference).

    python bench/batching.py --model shapes-sd --jobs 4 --rounds 3 --json bench/results/batching.json
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
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genaccel.settings import Settings  # noqa: E402
from genaccel.spec import Job, JobRequest  # noqa: E402
from pipelines.engine import LocalEngine  # noqa: E402


def run(model: str, jobs: int, max_batch: int, steps: int, seed0: int,
        invariant: bool | None = None) -> tuple[float, list[Job]]:
    home = Path(tempfile.mkdtemp(prefix="genaccel-batch-"))
    engine = LocalEngine(Settings(home=home, max_batch=max_batch, batch_invariant=invariant), scoped=False)
    warm = engine.submit(JobRequest.from_flat({"prompt": "warm-up", "model": model, "steps": 2}))
    engine.dispatcher.start()
    engine.wait([warm.id])
    engine.dispatcher.stop()
    prompts = ["a red circle at the top left on a white background", "a small blue square in the center on a "
               "black background", "a large green triangle at the bottom right on a grey background",
               "a yellow star at the top right on a white background"]
    ids = [engine.submit(JobRequest.from_flat({"prompt": prompts[i % len(prompts)], "model": model, "steps": steps,
                                              "seed": seed0 + i})).id for i in range(jobs)]
    engine.dispatcher = type(engine.dispatcher)(engine.store, engine.runner, scope=None)
    t0 = time.perf_counter()
    engine.dispatcher.start()
    done = engine.wait(ids, poll_s=0.005)
    took = time.perf_counter() - t0
    engine.dispatcher.stop()
    return took, done


def _pixels(job: Job) -> np.ndarray:
    return np.asarray(Image.open(job.artifacts[0].path)).astype(int)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="shapes-sd")
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/batching.json")
    args = p.parse_args()
    plain_t, single_t, batched_t, diffs, plain_diffs = [], [], [], [], []
    sizes: list[int] = []
    for r in range(args.rounds):
        t0, plain = run(args.model, args.jobs, 1, args.steps, 1000 * r, invariant=False)
        t1, one = run(args.model, args.jobs, 1, args.steps, 1000 * r, invariant=True)
        t4, many = run(args.model, args.jobs, args.jobs, args.steps, 1000 * r)
        plain_t.append(t0)
        single_t.append(t1)
        batched_t.append(t4)
        sizes += [int(j.metadata["batch_size"]) for j in many]
        for p0, a, b in zip(plain, one, many, strict=True):
            pa, pb = _pixels(a), _pixels(b)
            diffs.append(int(np.abs(pa - pb).max()))
            plain_diffs.append(int(np.abs(_pixels(p0) - pb).max()))
    plain_s, one_s, many_s = (statistics.median(t) for t in (plain_t, single_t, batched_t))
    record: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": args.model, "jobs": args.jobs, "steps": args.steps, "rounds": args.rounds,
        "one_at_a_time_plain_s": round(plain_s, 3), "one_at_a_time_invariant_s": round(one_s, 3),
        "batched_s": round(many_s, 3), "throughput_ratio": round(plain_s / many_s, 2),
        "throughput_ratio_vs_invariant_single": round(one_s / many_s, 2),
        "invariant_layers_cost": round(one_s / plain_s, 3), "batch_sizes": sorted(set(sizes)),
        "max_pixel_diff": max(diffs), "identical_images": sum(d == 0 for d in diffs), "images": len(diffs),
        "max_pixel_diff_vs_plain_single": max(plain_diffs),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
