"""Cost scaling of a video DiT on this machine: tiny Wan (``tiny-wan``) latency against frame
count and resolution, with the fitted exponents (time ~ frames^a, time ~ pixels^b).

Denoiser time is the transformer's forward time (all calls of the run); end to end adds the text
encoder and the VAE. Each point is the best of ``--repeats`` runs.

    python bench/video_scaling.py --json bench/results/video-scaling.json
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

from pipelines.tiny_video import build_tiny_wan


def measure(pipe, frames: int, side: int, steps: int, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    spent = [0.0]
    began: list[float] = []
    pre = pipe.transformer.register_forward_pre_hook(lambda m, a: began.append(time.perf_counter()))
    post = pipe.transformer.register_forward_hook(lambda m, a, o: spent.__setitem__(0, spent[0] + time.perf_counter()
                                                                                     - began.pop()))
    best = (float("inf"), float("inf"))
    try:
        for _ in range(repeats):
            spent[0] = 0.0
            t0 = time.perf_counter()
            pipe("a red ball", num_frames=frames, height=side, width=side, num_inference_steps=steps,
                 guidance_scale=5.0, max_sequence_length=64, generator=torch.Generator().manual_seed(0),
                 output_type="np")
            total = time.perf_counter() - t0
            best = min(best, (spent[0], total))
    finally:
        pre.remove()
        post.remove()
    return best


def slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pipe = build_tiny_wan()
    pipe.set_progress_bar_config(disable=True)
    measure(pipe, 9, 64, 1, 1)  # warm-up
    rows = []
    for frames in (9, 17, 33, 65):
        den, e2e = measure(pipe, frames, 64, args.steps, args.repeats)
        rows.append({"frames": frames, "side": 64, "denoiser_s": den, "end_to_end_s": e2e})
    for side in (128, 256):
        den, e2e = measure(pipe, 9, side, args.steps, args.repeats)
        rows.append({"frames": 9, "side": side, "denoiser_s": den, "end_to_end_s": e2e})
    by_frames = [r for r in rows if r["side"] == 64]
    by_side = [r for r in rows if r["frames"] == 9]
    fit = {
        "frames_exponent_denoiser": slope([r["frames"] for r in by_frames], [r["denoiser_s"] for r in by_frames]),
        "frames_exponent_end_to_end": slope([r["frames"] for r in by_frames], [r["end_to_end_s"] for r in by_frames]),
        "pixels_exponent_denoiser": slope([r["side"] ** 2 for r in by_side], [r["denoiser_s"] for r in by_side]),
        "pixels_exponent_end_to_end": slope([r["side"] ** 2 for r in by_side], [r["end_to_end_s"] for r in by_side]),
    }
    print("| frames | side | denoiser s | end to end s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['frames']} | {r['side']} | {r['denoiser_s']:.3f} | {r['end_to_end_s']:.3f} |")
    print(json.dumps(fit, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "fit": fit, "steps": args.steps,
                                         "torch_threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
