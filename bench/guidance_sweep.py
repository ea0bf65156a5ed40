"""Exact match of a reference image model against the guidance scale (and step count), on the
bench's own quality prompts (half held-out pairs, half natural captions), at the same seeds:
which default sampler setting a model card should carry.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/guidance_sweep.py --model shapes-dit --prompts 100 \\
        --guidance 3 4.5 7 10 --json bench/results/guidance-shapes-dit.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genaccel.bench.run import QualityData, score_quality
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.image import generate_images
from pipelines.loader import load_pipeline
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-dit")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0, 4.5, 7.0, 10.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings()
    registry = ModelRegistry(settings)
    info = registry.resolve(args.model)
    pipe = load_pipeline(info, torch.device("cpu"), torch.float32)
    data = QualityData(args.prompts, args.seed)
    rows = []
    print("| guidance | steps | exact match | trained | held-out | full | partial | shape (eval) | shape (template) "
          "| s/image |\n|---|---|---|---|---|---|---|---|---|---|")
    for steps in args.steps:
        for guidance in args.guidance:
            flat = {"prompt": data.prompts[0], "model": info.name, "guidance_scale": guidance, "steps": steps,
                    "seed": args.seed}
            request, _ = prepare_request(JobRequest.from_flat(flat), registry, settings)
            images, began = [], time.perf_counter()
            for start in range(0, len(data.prompts), args.chunk):
                seeded = request.model_copy(update={"params": request.params.model_copy(
                    update={"seed": args.seed + start, "num_outputs": 1})})
                images += [np.asarray(im.convert("RGB")) for im in generate_images(
                    pipe, seeded, lambda s, t: None, prompts=data.prompts[start:start + args.chunk])]
            seconds = (time.perf_counter() - began) / len(images)
            q = score_quality(data.evaluator, np.stack(images), data.prompts, data.groups)
            row = {"guidance": guidance, "steps": steps, "s_per_image": round(seconds, 4),
                   **{k: q[k] for k in ("prompt_accuracy", "exact_match_trained", "exact_match_heldout",
                                        "exact_match_full", "exact_match_partial", "shape_accuracy_evaluator",
                                        "shape_accuracy_template", "shape_none_rate")}}
            rows.append(row)
            print(f"| {guidance:g} | {steps} | {row['prompt_accuracy']:.3f} | {row['exact_match_trained']:.3f} | "
                  f"{row['exact_match_heldout']:.3f} | {row['exact_match_full']:.3f} | "
                  f"{row['exact_match_partial']:.3f} | {row['shape_accuracy_evaluator']:.3f} | "
                  f"{row['shape_accuracy_template']:.3f} | {seconds:.3f} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "model": info.name,
                                         "prompts": args.prompts, "seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
