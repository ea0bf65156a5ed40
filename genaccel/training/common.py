"""Small pieces every trainer here shares: checkpoints, loss curves, run logs."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write a training checkpoint (tensors, optimiser state, step, losses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def ema_update(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source``, parameter by parameter."""
    for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
        p_t.mul_(decay).add_(p_s.detach(), alpha=1 - decay)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def plot_loss(losses: list[float], path: Path, title: str) -> None:
    """Loss curve PNG (log scale, moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(losses, dtype=np.float64)
    k = max(1, len(y) // 100)
    smooth = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(len(y)), y, alpha=0.25, linewidth=0.5, label="per step")
    ax.plot(np.arange(len(smooth)) + k - 1, smooth, label=f"moving average ({k})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_log(path: Path, started: float, **fields: Any) -> None:
    """``train_log.json``: the command that made the weights, its duration and results."""
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    record = {"command": command, "seconds": round(time.time() - started, 1),
              "torch_threads": torch.get_num_threads(), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def training_cli(doc: str, out: str, work: str) -> tuple[Any, Any, Any]:
    """The options every reference-model script shares, and tqdm progress bars per stage.

    Returns ``(parser, progress, close)``: ``progress(stage)`` gives a ``(step, total, loss)``
    callback; ``close()`` closes the bars. Threads are applied when ``parse_args`` runs.
    """
    import argparse

    class Parser(argparse.ArgumentParser):
        def parse_args(self, *a: Any, **kw: Any) -> Any:  # type: ignore[override]
            args = super().parse_args(*a, **kw)
            if args.threads:
                torch.set_num_threads(args.threads)
            return args

    p = Parser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--work", type=Path, default=Path(work), help="checkpoints and caches")
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--steps", "--unet-steps", dest="unet_steps", type=int, default=3000, help="denoiser steps")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--data", type=int, default=20000, help="training images (latents cached)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-gate", type=float, default=0.98,
                   help="least exact match of VAE reconstructions (evaluator) before the denoiser stage")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--offset-noise", type=float, default=0.1, help="offset noise strength (0 = off)")
    p.add_argument("--offset-from", type=int, default=0, help="denoiser step from which offset noise is used")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop the denoiser stage (with a checkpoint) once this many minutes have passed")
    p.add_argument("--natural", type=float, default=0.5,
                   help="share of training captions drawn as natural captions (the rest: the fixed full form)")
    p.add_argument("--fg-weight", type=float, default=0.0,
                   help="shape cells' share of the latent loss is fg/(1+fg); 0 (unweighted) is right for diffusion: "
                        "see genaccel.training.latent_diffusion")
    p.add_argument("--max-rotation", type=float, default=None,
                   help="degrees: tilt square/triangle/star at most this much from upright (default: any angle; "
                        "see genaccel.refdata.shapes.render)")
    progress, close = training_progress()
    return p, progress, close


def training_progress() -> tuple[Any, Any]:
    """``(progress, close)``: ``progress(stage)`` gives a ``(step, total, loss)`` callback that drives
    one tqdm bar per stage; ``close()`` closes them."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str) -> Any:
        def update(step: int, total: int, loss: float) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, initial=step - 1, desc=stage, mininterval=5)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        return update

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close
