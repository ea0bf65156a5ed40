"""DiT caches on a Wan-shaped transformer with random weights: denoiser time against the
uncached run, side by side in one process, and how far each clip moves from the uncached one
(PSNR). The caches with a fixed schedule (PAB, TaylorSeer, FasterCache) skip the same share of
work on any weights, so their speed ratios carry over; the data-dependent first-block cache
and MagCache depend on the trained model's residuals, so their ratios here say little.

    python bench/video_caches.py --json bench/results/video-caches.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import WanTransformer3DModel

from genaccel.accel import apply_techniques, parse_technique
from genaccel.metrics.quality import psnr
from genaccel.spec import TechniqueSpec
from pipelines.tiny_video import build_tiny_wan

CACHES: dict[str, dict[str, Any]] = {
    "pab": {"skip": 2, "window_low": 100, "window_high": 900},
    "taylorseer": {"interval": 3, "warmup": 3},
    "fastercache": {"attention_only": True},
    "fbcache": {"threshold": 0.1},
    "magcache": {"ratios": [1.0] * 20, "threshold": 0.06},
}


def wan(layers: int, heads: int) -> Any:
    pipe = build_tiny_wan()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe.transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=32, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=4 * heads * 32, num_layers=layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe: Any, frames: int, side: int, steps: int) -> tuple[np.ndarray, float]:
    spent, began = [0.0], []
    pre = pipe.transformer.register_forward_pre_hook(lambda m, a: began.append(time.perf_counter()))
    post = pipe.transformer.register_forward_hook(
        lambda m, a, o: spent.__setitem__(0, spent[0] + time.perf_counter() - began.pop()))
    try:
        frames_out = pipe("a red ball moving from left to right", num_frames=frames, height=side, width=side,
                          num_inference_steps=steps, guidance_scale=5.0, max_sequence_length=64,
                          generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    finally:
        pre.remove()
        post.remove()
    return np.asarray(frames_out), spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pipe = wan(args.layers, args.heads)
    run(pipe, 5, args.side, 2)  # warm-up
    base, base_s = run(pipe, args.frames, args.side, args.steps)
    rows = [{"cache": "none", "denoiser_s": base_s, "speedup": 1.0, "psnr_vs_none": None}]
    for name, options in CACHES.items():
        handle = apply_techniques(pipe, [parse_technique(TechniqueSpec(name=name, options=options))])
        try:
            handle.reset()
            out, seconds = run(pipe, args.frames, args.side, args.steps)
        finally:
            handle.remove()
        rows.append({"cache": name, "options": options, "denoiser_s": seconds, "speedup": base_s / seconds,
                     "psnr_vs_none": psnr(out, base)})
    print(f"Wan-shaped, {args.layers} layers x {args.heads * 32} dim, {args.frames} frames at {args.side} px, "
          f"{args.steps} steps, guidance 5")
    print("| cache | denoiser s | speed-up | PSNR vs none (dB) |\n|---|---|---|---|")
    for r in rows:
        p = "–" if r["psnr_vs_none"] is None else f"{r['psnr_vs_none']:.1f}"
        print(f"| {r['cache']} | {r['denoiser_s']:.2f} | {r['speedup']:.2f}x | {p} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
