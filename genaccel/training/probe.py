"""Exact match of a denoiser checkpoint while it trains: assemble the pipeline from the EMA
weights in ``WORK`` (the run's own VAE and latent scale), render the bench's quality prompts and
score them with both readers, so a long run can be judged (or stopped) before it ends.

    python -m genaccel.training.probe --kind sd --work runs/shapes-sd-v2 --prompts 48 --steps 25
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.training_utils import EMAModel


def load_checkpoint_pipeline(kind: str, work: Path) -> tuple[Any, int]:
    """The pipeline of ``work``'s latest denoiser checkpoint with its EMA weights, and its step
    (a shapes-sd UNet's widths are read from the checkpoint's own weights)."""
    from genaccel.training import shapes_dit, shapes_sd
    from genaccel.training.common import load_checkpoint

    latents = sorted(work.glob("latents-*-v2.pt"))
    if not latents:
        raise FileNotFoundError(f"no cached latents in {work}: has the denoiser stage started?")
    scale = float(1.0 / torch.load(latents[-1], weights_only=True)["latents"].flatten().std())
    vae = AutoencoderKL.from_pretrained(work / "vae", torch_dtype=torch.float32, use_safetensors=True).eval()
    vae.register_to_config(scaling_factor=scale)
    state = load_checkpoint(work / ("unet.pt" if kind == "sd" else "dit.pt"))
    if state is None:
        raise FileNotFoundError(f"no denoiser checkpoint in {work}")
    if kind == "sd":
        weights = state["denoiser"]
        widths = tuple(weights[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]
                       for i in range(len({k.split(".")[1] for k in weights if k.startswith("down_blocks.")})))
        parts = shapes_sd.build_components(shapes_sd.ShapesSDConfig(unet_channels=widths))
        denoiser = parts["unet"]
    else:
        parts = shapes_dit.build_dit_components(shapes_dit.ShapesDiTConfig())
        denoiser = parts["transformer"]
    params = [*denoiser.parameters(), *parts["text_encoder"].parameters()]
    ema = EMAModel(params)
    ema.load_state_dict(state["ema"])
    ema.copy_to(params)
    parts["vae"] = vae
    pipe = shapes_sd.assemble_pipeline(parts) if kind == "sd" else shapes_dit.assemble_dit_pipeline(parts, vae)
    return pipe, int(state["step"])


@torch.no_grad()
def probe(pipe: Any, prompts: int = 48, steps: int = 25, seed: int = 123, guidance: float = 7.5,
          sheet: Path | None = None) -> dict[str, Any]:
    """The bench's quality columns for ``prompts`` of its quality prompts (half held-out pairs,
    half natural captions); ``sheet``: write the outputs as a contact sheet PNG there."""
    import inspect

    from genaccel.bench.run import QualityData, score_quality

    data = QualityData(prompts, seed)
    binning = "use_resolution_binning" in inspect.signature(pipe.__call__).parameters
    extra = {"use_resolution_binning": False} if binning else {}
    images = []
    for i in range(0, len(data.prompts), 16):
        batch = data.prompts[i:i + 16]
        gen = [torch.Generator().manual_seed(seed + i + j) for j in range(len(batch))]
        out = pipe(batch, num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="np",
                   height=64, width=64, **extra)
        images.append((out.images * 255).round().astype(np.uint8))
    scores = score_quality(data.evaluator, np.concatenate(images), data.prompts, data.groups,
                           sample_count=len(data.prompts))
    samples = scores.pop("_samples")
    if sheet is not None:
        from genaccel.bench.report import contact_sheet

        contact_sheet([(f"{prompts} quality prompts, {steps} steps, guidance {guidance}", samples)], sheet)
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kind", choices=("sd", "dit"), required=True)
    p.add_argument("--work", type=Path, required=True,
                   help="the run's work folder (or, with --pipeline, where to write)")
    p.add_argument("--pipeline", type=Path, help="score this saved pipeline folder instead of WORK's checkpoint")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.pipeline:
        from diffusers import DiffusionPipeline

        pipe, step = DiffusionPipeline.from_pretrained(args.pipeline, torch_dtype=torch.float32), 0
        pipe.set_progress_bar_config(disable=True)
        args.work.mkdir(parents=True, exist_ok=True)
    else:
        pipe, step = load_checkpoint_pipeline(args.kind, args.work)
    scores = probe(pipe, args.prompts, args.steps, guidance=args.guidance,
                   sheet=args.work / f"probe-{step}.png")
    keep = ("prompt_accuracy", "exact_match_trained", "exact_match_heldout", "exact_match_full",
            "exact_match_partial", "shape_accuracy_evaluator", "shape_accuracy_template", "shape_none_rate")
    line = {"step": step, **{k: round(scores[k], 3) if isinstance(scores[k], float) else scores[k] for k in keep},
            "attribute_accuracy": {k: round(v, 3) for k, v in scores["attribute_accuracy"].items()}}
    print(json.dumps(line))
    with (args.work / "probe.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
