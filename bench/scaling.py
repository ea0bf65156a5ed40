"""How cost grows with the size of a request, on this machine: latency against image resolution,
step count, video frame count and audio duration, each fitted to ``latency = a * x^k`` (least
squares in log-log space), with one PNG plot per sweep.

    python bench/scaling.py --out bench/results/scaling            # every sweep (about 5 min on 2 cores)
    python bench/scaling.py --out /tmp/s --sweeps frames --tiny    # a quick look

Sweeps (each point is the median of ``--repeats`` timed calls after one warm-up, in one process):

* ``resolution``: one denoiser step (CFG batch) of the real-size SD 1.5 UNet (random weights,
  ``genaccel/bench/real_size.py``) at 128 to 384 px; attention grows with the square of the
  token count, convolutions linearly, so k lies between 2 (pixels) and 4;
* ``steps``: one image end to end on ``shapes-sd`` at 5 to 80 DDIM steps (k near 1: the text
  encoder and VAE are paid once);
* ``frames``: one denoiser step of a tiny Wan video transformer at 9 to 65 frames (4k+1) at 64 px;
* ``duration``: one denoiser step of a tiny Stable Audio DiT at 0.25 to 2 s.
"""

from __future__ import annotations

import argparse
import json
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SWEEPS = ("resolution", "steps", "frames", "duration")


def fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """``ys = a * xs**k``: the exponent k, the factor a and R² of the log-log fit."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    k, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (k * lx + log_a)
    total = ((ly - ly.mean()) ** 2).sum()
    return {"exponent": float(k), "factor": float(np.exp(log_a)),
            "r2": float(1 - (residual ** 2).sum() / total) if total else 1.0}


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _step_timer(arch_name: str, tiny: bool, call: dict[str, Any], repeats: int) -> float:
    """One denoiser step (the inputs the pipeline itself makes at its first step)."""
    import gpu_check  # bench/gpu_check.py: the same input capture

    from genaccel.bench.real_size import ARCHS

    arch = ARCHS[arch_name]
    pipe = _PIPES.get((arch_name, tiny))
    if pipe is None:
        pipe = _PIPES[(arch_name, tiny)] = gpu_check.build(arch, tiny, torch.device("cpu"), torch.float32)
    args, kwargs = gpu_check.capture_inputs(arch, pipe, call, torch.device("cpu"), torch.float32)
    model = gpu_check.denoiser_of(pipe)
    with torch.no_grad():
        return _median_time(lambda: model(*args, **kwargs), repeats)


_PIPES: dict[tuple[str, bool], Any] = {}


def sweep(name: str, tiny: bool, repeats: int) -> dict[str, Any]:
    if name == "resolution":
        xs = [64, 96, 128] if tiny else [128, 192, 256, 320, 384]
        ys = [_step_timer("sd15", tiny, {"height": x, "width": x}, repeats) for x in xs]
        return {"x": xs, "y": ys, "x_label": "image side (px)", "y_label": "denoiser step (s)",
                "what": "SD 1.5 UNet step, CFG batch" + (" (tiny)" if tiny else " (real size, random weights)")}
    if name == "frames":
        xs = [5, 9] if tiny else [9, 17, 33, 49, 65]
        side = 32 if tiny else 64
        ys = [_step_timer("wan", True, {"height": side, "width": side, "num_frames": x}, repeats) for x in xs]
        return {"x": xs, "y": ys, "x_label": "frames", "y_label": "denoiser step (s)",
                "what": f"tiny Wan transformer step at {side} px"}
    if name == "duration":
        xs = [0.25, 0.5, 1.0] if tiny else [0.25, 0.5, 1.0, 1.5, 2.0]
        ys = [_step_timer("stable-audio", True, {"audio_end_in_s": x}, repeats) for x in xs]
        return {"x": xs, "y": ys, "x_label": "audio seconds", "y_label": "denoiser step (s)",
                "what": "tiny Stable Audio DiT step"}
    if name == "steps":
        return _steps_sweep(tiny, repeats)
    raise ValueError(f"unknown sweep {name}; use some of {', '.join(SWEEPS)}")


def _steps_sweep(tiny: bool, repeats: int) -> dict[str, Any]:
    from genaccel.settings import Settings
    from genaccel.spec import JobRequest
    from pipelines.image import generate_images
    from pipelines.loader import load_pipeline
    from pipelines.prepare import prepare_request
    from pipelines.registry import ModelRegistry

    model = "tiny-sd" if tiny else "shapes-sd"
    settings = Settings()
    registry = ModelRegistry(settings)
    info = registry.resolve(model)
    pipe = load_pipeline(info, torch.device("cpu"), torch.float32)
    xs = [2, 4, 8] if tiny else [5, 10, 20, 40, 80]
    ys = []
    for steps in xs:
        request, _ = prepare_request(JobRequest.from_flat({"prompt": "a red circle", "model": model, "steps": steps,
                                                           "seed": 1}), registry, settings)
        ys.append(_median_time(lambda request=request: generate_images(pipe, request, lambda s, t: None), repeats))
    return {"x": xs, "y": ys, "x_label": "steps", "y_label": "one image end to end (s)",
            "what": f"{model}, DDIM with CFG"}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=110)
    xs, ys, f = result["x"], result["y"], result["fit"]
    ax.loglog(xs, ys, "o", label="measured")
    grid = np.geomspace(min(xs), max(xs), 50)
    ax.loglog(grid, f["factor"] * grid ** f["exponent"], "-", label=f"fit: k = {f['exponent']:.2f}")
    ax.set_xlabel(result["x_label"])
    ax.set_ylabel(result["y_label"])
    ax.set_title(result["what"], fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| sweep | what | points (x: seconds) | exponent k | R² |", "|---|---|---|---|---|"]
    for name, r in results.items():
        points = ", ".join(f"{x:g}: {y:.3g}" for x, y in zip(r["x"], r["y"], strict=True))
        lines.append(f"| {name} | {r['what']} | {points} | {r['fit']['exponent']:.2f} | {r['fit']['r2']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for scaling.json, scaling.md and PNGs")
    parser.add_argument("--sweeps", default=",".join(SWEEPS), help=f"comma-separated, of: {', '.join(SWEEPS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="small points only (a quick check)")
    args = parser.parse_args(argv)
    names = [n for n in args.sweeps.split(",") if n]
    unknown = sorted(set(names) - set(SWEEPS))
    if unknown:
        parser.error(f"unknown sweep {', '.join(unknown)}; use some of {', '.join(SWEEPS)}")
    sys.path.insert(0, str(ROOT / "bench"))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        started = time.perf_counter()
        result = sweep(name, args.tiny, args.repeats)
        result["fit"] = fit(result["x"], result["y"])
        result["seconds"] = time.perf_counter() - started
        plot(result, args.out / f"scaling-{name}.png")
        results[name] = result
        print(f"{name}: k = {result['fit']['exponent']:.2f} ({result['seconds']:.0f} s)", file=sys.stderr)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__, "command": "python bench/scaling.py " + " ".join(argv or sys.argv[1:]),
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "sweeps": results}, indent=1) + "\n")
    (args.out / "scaling.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
