"""Denoiser memory and speed under weight quantisation (issue 19, item 3).

For each reference model and each setting, a fresh child process loads the pipeline (fp32, CPU),
captures the denoiser's inputs from a one-step CFG call, applies ``quantize`` (its default stash:
the float weights go to a temporary file), and measures

* ``weight_bytes``: the denoiser's resident parameters + buffers;
* ``forward_peak_bytes``: peak RSS during one denoiser forward minus RSS just before it (the
  activations and, for int8_weight, the one-layer dequantised weight);
* ``denoiser_peak_bytes`` = the two added: the denoiser's memory during a step;
* ``rel_err``: ||out - out_float|| / ||out_float||.

The child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so glibc maps every tensor of 64 KiB or more
on its own and returns it on free: RSS then follows what is live, not what the heap kept. Every
large allocation is then a page fault, so this script times nothing: latency comes from
``genaccel bench`` (bench/quantize-*.yaml).

    python bench/quantize.py --json bench/results/quantize-memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genaccel, not an installed one
SETTINGS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "int8_weight": {"mode": "int8_weight"},
    "int8_weight linear+conv": {"mode": "int8_weight", "modules": "linear+conv"},
    "int8_dynamic": {"mode": "int8_dynamic"},
    "int8_dynamic linear+conv": {"mode": "int8_dynamic", "modules": "linear+conv"},
}


def child(model: str, setting: str, out: Path) -> dict[str, Any]:
    import ctypes
    import gc

    import psutil
    import torch

    from genaccel.accel import apply_techniques
    from genaccel.accel.quantize import QuantizeConfig, weight_bytes
    from genaccel.bench.measure import PeakMemory
    from genaccel.settings import Settings
    from pipelines.loader import load_pipeline
    from pipelines.registry import ModelRegistry

    torch.manual_seed(0)
    info = ModelRegistry(Settings()).resolve(model)
    pipe = load_pipeline(info, torch.device("cpu"), torch.float32)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    captured: dict[str, Any] = {}

    def grab(module: Any, args: Any, kwargs: Any) -> None:
        captured.setdefault("call", (args, kwargs))

    handle = denoiser.register_forward_pre_hook(grab, with_kwargs=True)
    extra = {"use_resolution_binning": False} if hasattr(pipe, "transformer") else {}
    with torch.no_grad():
        pipe("a red circle above a blue square", num_inference_steps=1, output_type="latent",
             generator=torch.Generator().manual_seed(0), **extra)
    handle.remove()
    args, kwargs = captured["call"]
    float_bytes = weight_bytes(denoiser)
    options = SETTINGS[setting]
    techniques = apply_techniques(pipe, [QuantizeConfig(**options)]) if options else None
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    quant_bytes = weight_bytes(denoiser)
    rss_ready = psutil.Process().memory_info().rss
    with torch.no_grad(), PeakMemory(interval_s=0.0005) as peak:
        output = denoiser(*args, **kwargs)[0]
    torch.save(output, out)
    if techniques is not None:
        techniques.remove()
    return {"model": model, "setting": setting, "options": options, "float_weight_bytes": float_bytes,
            "weight_bytes": quant_bytes, "rss_ready_mb": rss_ready / 2**20,
            "forward_peak_bytes": max(0, peak.peak_rss - rss_ready),
            "shape": list(output.shape)}


def sheet(path: Path, models: list[str]) -> None:
    """A contact sheet: per model, rows off / each quantised setting, four prompts, 50 steps, same seeds."""
    import numpy as np
    import torch
    from PIL import Image

    from genaccel.accel import apply_techniques
    from genaccel.accel.quantize import QuantizeConfig
    from genaccel.settings import Settings
    from pipelines.loader import load_pipeline
    from pipelines.registry import ModelRegistry

    prompts = ["a red circle", "a blue square above a green triangle", "a small yellow star", "two purple circles"]
    rows = []
    for model in models:
        pipe = load_pipeline(ModelRegistry(Settings()).resolve(model), torch.device("cpu"), torch.float32)
        extra = {"use_resolution_binning": False} if hasattr(pipe, "transformer") else {}
        for options in (None, {"mode": "int8_weight", "modules": "linear+conv"}, {"mode": "int8_dynamic"}):
            techniques = apply_techniques(pipe, [QuantizeConfig(**options)]) if options else None
            with torch.no_grad():
                images = [pipe(p, num_inference_steps=50, output_type="np", generator=torch.Generator().manual_seed(i),
                               **extra).images[0] for i, p in enumerate(prompts)]
            if techniques is not None:
                techniques.remove()
            rows.append(np.concatenate(images, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray((grid * 255).round().astype("uint8")).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                                                 Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["shapes-sd", "shapes-dit"])
    parser.add_argument("--json", type=Path, default=Path("bench/results/quantize-memory.json"))
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "SETTING", "OUT"))
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG instead (rows per model: off, "
                        "int8_weight linear+conv, int8_dynamic)")
    ns = parser.parse_args()
    if ns.sheet:
        sheet(ns.sheet, ns.models)
        return
    if ns.child:
        print(json.dumps(child(ns.child[0], ns.child[1], Path(ns.child[2]))))
        return
    import torch

    rows = []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ns.models:
            reference = None
            for setting in SETTINGS:
                out = Path(tmp) / f"{model}-{setting}.pt"
                done = subprocess.run([sys.executable, __file__, "--child", model, setting, str(out)], env=env,
                                      capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                output = torch.load(out)
                if reference is None:
                    reference = output
                row["rel_err"] = float((output - reference).norm() / reference.norm())
                row["denoiser_peak_bytes"] = row["weight_bytes"] + row["forward_peak_bytes"]
                base = next((r for r in rows if r["model"] == model and r["setting"] == "off"), row)
                row["weight_ratio"] = base["weight_bytes"] / row["weight_bytes"]
                row["denoiser_peak_ratio"] = base["denoiser_peak_bytes"] / row["denoiser_peak_bytes"]
                rows.append(row)
                print(f"{model:11s} {setting:26s} weights {row['weight_bytes'] / 2**20:6.2f} MiB "
                      f"(x{row['weight_ratio']:.2f})  forward peak +{row['forward_peak_bytes'] / 2**20:6.2f} MiB  "
                      f"denoiser peak x{row['denoiser_peak_ratio']:.2f}  rel_err {row['rel_err']:.4f}", flush=True)
    meta = {"command": "python bench/quantize.py --json " + str(ns.json), "torch": torch.__version__,
            "device": "cpu", "dtype": "float32", "threads": torch.get_num_threads(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    ns.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
