"""The reference video model (``assets/shapes-video``) side by side: exact match, direction
accuracy and temporal consistency (``genaccel.metrics.video``) with each cache, against the
uncached run at the same seeds, with the denoiser and end-to-end time of each variant; and LCM
students (``genaccel distill --teacher shapes-video``) at their own step count without guidance.

    python bench/video_reference.py --count 100 --json bench/results/video-reference.json \
        --student runs/shapes-video-lcm:4 --student runs/shapes-video-lcm:2
    python bench/video_reference.py --model runs/shapes-video-smoke/model --count 8   # any Latte folder
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

from diffusers import LattePipeline

import pipelines.caption_latte  # noqa: F401  (models trained with --caption-modulation name it)
from genaccel.accel import apply_techniques, parse_technique
from genaccel.bench.run import EVALUATOR
from genaccel.metrics.evaluator import Evaluator
from genaccel.metrics.video import score_clips
from genaccel.refdata.moving_shapes import natural_video_caption, sample_motion_specs
from genaccel.spec import TechniqueSpec

VARIANTS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "pab": [{"name": "pab", "options": {"skip": 2}}],
    "taylorseer": [{"name": "taylorseer", "options": {"interval": 2, "warmup": 3}}],
    "taylorseer-3": [{"name": "taylorseer", "options": {"interval": 3, "warmup": 3}}],
    "taylorseer-model": [{"name": "taylorseer", "options": {"interval": 2, "warmup": 3, "scope": "model"}}],
    "taylorseer-model-3": [{"name": "taylorseer", "options": {"interval": 3, "warmup": 3, "scope": "model"}}],
    "fastercache": [{"name": "fastercache", "options": {}}],
    "density-time": [{"name": "density", "options": {"space": False}}],
    "density": [{"name": "density", "options": {}}],
}


def render(pipe: Any, prompts: list[str], steps: int, guidance: float, seed: int,
           ) -> tuple[list[np.ndarray], float, float]:
    """Clips for ``prompts`` (seed + i each), the denoiser's seconds and the end-to-end seconds."""
    spent, began = [0.0], []
    start = time.perf_counter()
    pre = pipe.transformer.register_forward_pre_hook(lambda m, a: began.append(time.perf_counter()))
    post = pipe.transformer.register_forward_hook(
        lambda m, a, o: spent.__setitem__(0, spent[0] + time.perf_counter() - began.pop()))
    clips = []
    try:
        for i, prompt in enumerate(prompts):
            frames = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                          video_length=pipe.transformer.config.video_length, output_type="pil", clean_caption=False,
                          generator=torch.Generator().manual_seed(seed + i)).frames[0]
            clips.append(np.stack([np.asarray(f.convert("RGB")) for f in frames]))
    finally:
        pre.remove()
        post.remove()
    return clips, spent[0], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("assets/shapes-video"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=4.5)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--student", action="append", default=[],
                        help="PATH[:STEPS] of an LCM student folder (default 4 steps), run without guidance")
    parser.add_argument("--captions", choices=("full", "natural"), default="full",
                        help="natural: every other prompt in a user's words (scored on what it names)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG: the first 8 clips per row")
    args = parser.parse_args()
    pipe = LattePipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    evaluator = Evaluator.load(EVALUATOR)
    specs = sample_motion_specs(args.count, args.seed)
    prompts = [s.caption() for s in specs]
    if args.captions == "natural":
        rng = np.random.default_rng(args.seed)
        prompts = [natural_video_caption(s, rng) if i % 2 else s.caption() for i, s in enumerate(specs)]
    rows: list[dict[str, Any]] = []
    sheets: list[tuple[str, list[np.ndarray]]] = []
    for name in args.variants.split(","):
        handle = apply_techniques(pipe, [parse_technique(TechniqueSpec(**t)) for t in VARIANTS[name]])
        try:
            handle.reset()
            clips, seconds, wall = render(pipe, prompts, args.steps, args.guidance, args.seed)
        finally:
            handle.remove()
        rows.append({"variant": name, "steps": args.steps, "denoiser_s": seconds, "wall_s": wall,
                     **score_clips(evaluator, clips, prompts)})
        sheets.append((name, clips[:8]))
    for spec in args.student:
        path, _, steps = spec.partition(":")
        student = LattePipeline.from_pretrained(path, torch_dtype=torch.float32)
        student.set_progress_bar_config(disable=True)
        clips, seconds, wall = render(student, prompts, int(steps or 4), 1.0, args.seed)
        rows.append({"variant": f"student {Path(path).name}", "steps": int(steps or 4), "denoiser_s": seconds,
                     "wall_s": wall, **score_clips(evaluator, clips, prompts)})
        sheets.append((rows[-1]["variant"] + f" {rows[-1]['steps']} steps", clips[:8]))
    base, base_wall = rows[0]["denoiser_s"], rows[0]["wall_s"]
    print(f"{args.model}, {args.count} prompts, {args.steps} steps, guidance {args.guidance}")
    print("| variant | steps | denoiser speed-up | end-to-end speed-up | exact match | direction | shape | "
          "consistency |\n|---|---|---|---|---|---|---|---|")

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in rows:
        print(f"| {r['variant']} | {r['steps']} | {base / r['denoiser_s']:.2f}x | {base_wall / r['wall_s']:.2f}x | "
              f"{rate(r['exact_match'])} | {rate(r['direction_accuracy'])} | {rate(r['shape_accuracy'])} | "
              f"{rate(r['temporal_consistency'])} |")
    if args.sheet:
        from genaccel.bench.report import write_video_sheet

        write_video_sheet(sheets, prompts[:8], args.sheet)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": given, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
