#!/usr/bin/env python
"""ToMe / ToDo / DeepCache against the `tomesd` and `deepcache` packages: an SD-1.5-size UNet (the
real SD 1.5 config, random seeded weights) in a StableDiffusionPipeline with a small random text
encoder (hidden size 768, one layer) and a small random VAE with SD's 8x downsampling, fp32. Rows,
side by side in one process: baseline, `tomesd` ratio 0.5, our `tome` ratio 0.5, our `todo` factor
2, the `deepcache` package at interval 3 / branch 0, ours at the same settings; each with short
warm-up runs and the median of ``--repeats`` timed runs, the rows interleaved (end to end: text
encoder, UNet steps, VAE decode). Also the largest absolute difference between our ToMe's images
and tomesd's (tomesd's generator is forked from the global RNG at its first draw, so the global
RNG is seeded with our seed before each tomesd run; both then draw the same sub-grids), between
our DeepCache's and the package's, and each row's difference from the baseline. ``--rows`` picks a
subset.

    python bench/tome_vs_tomesd.py --size 256 --steps 10 --repeats 3
    python bench/tome_vs_tomesd.py --size 512 --steps 10 --repeats 2 --json bench/results/tome_vs_tomesd-512.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genaccel.accel import apply_techniques  # noqa: E402
from genaccel.accel.deepcache import DeepCacheConfig  # noqa: E402
from genaccel.accel.todo import ToDoConfig  # noqa: E402
from genaccel.accel.tome import ToMeConfig  # noqa: E402

PROMPT = "a red circle at the top left on a white background"


def build_pipeline(seed: int) -> Any:
    """SD 1.5 UNet config at random weights; text encoder and VAE small but SD-shaped (768, 8x)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipelines.tokenizers import byte_clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = byte_clip_tokenizer()
        unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
            sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2, cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        ).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=768, intermediate_size=768,
            num_attention_heads=12, num_hidden_layers=1, vocab_size=len(tokenizer), max_position_embeddings=77,
        )).eval()
        vae = AutoencoderKL(  # 4 levels: 8x downsampling like SD's VAE, at toy width
            block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        ).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Row:
    """One way of running: ``enable`` / ``before_run`` (untimed, before each run) / ``disable``."""

    def __init__(self, name: str, enable: Callable[[], Any], before_run: Callable[[Any], None],
                 disable: Callable[[Any], None]) -> None:
        self.name, self.enable, self.before_run, self.disable = name, enable, before_run, disable


def rows(pipe: Any) -> list[Row]:
    try:
        import tomesd
        from DeepCache import DeepCacheSDHelper
    except ImportError:
        raise SystemExit("this benchmark compares with tomesd and deepcache: pip install tomesd deepcache") from None

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)

    def deepcache_enable() -> None:  # enabled per run: the package keeps its step state between calls
        helper.enable()

    def deepcache_disable(_: Any) -> None:
        helper.disable()

    def tomesd_before(_: Any) -> None:
        tomesd.remove_patch(pipe)  # a fresh patch forks a fresh generator from the global RNG at its first draw,
        tomesd.apply_patch(pipe, ratio=0.5)
        torch.manual_seed(0)  # seeded like ours (ToMeConfig.seed=0), so both draw the same sub-grids

    def ours(config: Any) -> Row:
        return Row(config.name, lambda: apply_techniques(pipe, [config]), lambda h: h.reset(), lambda h: h.remove())

    return [
        Row("baseline", lambda: None, lambda _: None, lambda _: None),
        Row("tomesd", lambda: None, tomesd_before, lambda _: tomesd.remove_patch(pipe)),
        ours(ToMeConfig(ratio=0.5, seed=0)),
        ours(ToDoConfig(factor=2)),
        Row("deepcache (package)", deepcache_enable, lambda _: None, deepcache_disable),
        ours(DeepCacheConfig(interval=3, branch=0)),
    ]


def generate(pipe: Any, size: int, steps: int, seed: int) -> np.ndarray:
    return pipe(PROMPT, num_inference_steps=steps, height=size, width=size, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


def _diff(images: dict[str, np.ndarray], ours: str, theirs: str) -> float | None:
    if ours not in images or theirs not in images:
        return None
    return float(np.abs(images[ours] - images[theirs]).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=256, choices=[256, 512, 768], help="image side in pixels")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per row")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of each warm-up run")
    p.add_argument("--seed", type=int, default=0, help="weights and latents seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--rows", default="", help="comma-separated row names to run (default: all; baseline always)")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/tome_vs_tomesd.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = build_pipeline(args.seed)
    params = sum(x.numel() for x in pipe.unet.parameters()) / 1e6
    print(f"built in {time.perf_counter() - t0:.1f} s; UNet {params:.0f}M parameters", flush=True)
    images: dict[str, np.ndarray] = {}
    wanted = {name.strip() for name in args.rows.split(",") if name.strip()}
    chosen = [row for row in rows(pipe) if not wanted or row.name == "baseline" or row.name in wanted]
    times: dict[str, list[float]] = {row.name: [] for row in chosen}

    def timed(row: Row, steps: int) -> tuple[float, np.ndarray]:
        state = row.enable()
        try:
            row.before_run(state)
            t1 = time.perf_counter()
            out = generate(pipe, args.size, steps, args.seed)
            return time.perf_counter() - t1, out
        finally:
            row.disable(state)

    for row in chosen:  # warm-up: first-call allocations, tomesd's patch, oneDNN's kernel choice
        for _ in range(args.warmup):
            took, _ = timed(row, args.warmup_steps)
            print(f"{row.name}: warm-up {took:.1f} s", flush=True)
    for i in range(args.repeats):  # rows interleaved, so a slow spell of the machine hits all of them
        for row in chosen:
            took, images[row.name] = timed(row, args.steps)
            times[row.name].append(took)
            print(f"{row.name}: run {i + 1}/{args.repeats} {took:.1f} s", flush=True)
    results = [{"row": name, "latency_s": round(statistics.median(t), 3), "latency_s_min": round(min(t), 3),
                "latency_s_max": round(max(t), 3)} for name, t in times.items()]
    base = results[0]["latency_s"]
    for r in results:
        diff = np.abs(images[r["row"]] - images["baseline"])
        r.update(speedup=round(base / r["latency_s"], 3), mean_abs_diff_vs_baseline=float(diff.mean()),
                 max_abs_diff_vs_baseline=float(diff.max()))
    record: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "diffusers": importlib.metadata.version("diffusers"),
        "tomesd": importlib.metadata.version("tomesd"), "deepcache": importlib.metadata.version("deepcache"),
        "unet": "SD 1.5 config, random weights", "dtype": "float32", "device": "cpu",
        "size": args.size, "steps": args.steps, "guidance_scale": 7.5, "repeats": args.repeats,
        "warmup": args.warmup, "warmup_steps": args.warmup_steps, "interleaved": True, "seed": args.seed,
        "ours_vs_tomesd_max_abs_diff": _diff(images, "tome", "tomesd"),
        "ours_vs_deepcache_package_max_abs_diff": _diff(images, "deepcache", "deepcache (package)"),
        "rows": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{args.size}x{args.size}, {args.steps} steps, fp32 CPU ({record['machine']}), median of {args.repeats}\n")
    print("| row | latency (s) | speed-up | mean abs diff vs baseline | max abs diff vs baseline |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['latency_s']:.2f} | {r['speedup']:.2f}x | {r['mean_abs_diff_vs_baseline']:.4f} "
              f"| {r['max_abs_diff_vs_baseline']:.4f} |")
    print(f"\nmax abs diff, our tome vs tomesd: {record['ours_vs_tomesd_max_abs_diff']}, "
          f"our deepcache vs the package: {record['ours_vs_deepcache_package_max_abs_diff']}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
