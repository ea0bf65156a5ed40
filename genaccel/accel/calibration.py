"""Per-model calibration data for techniques that need it (MagCache's magnitude ratios).

MagCache (Ma et al. 2025) skips the transformer blocks while the accumulated change of their
residual, predicted from a per-model curve of residual-magnitude ratios between consecutive
steps, stays small. The curve depends on the checkpoint, so it is measured once per model:
``genaccel calibrate --model M`` runs a few prompts with hooks on the first and last block and
stores the mean ratio per step. Measured here rather than with diffusers' calibration mode,
which prints the ratios instead of returning them.

Where the curve is kept, first found wins: ``GENACCEL_HOME/calibration/<key>.json`` (written by
the command; ``key`` is derived from the model folder), then ``magcache`` in the model folder's
own ``genaccel.json`` (shipped with the reference models).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import torch

from genaccel.settings import Settings


def model_folder(pipe: Any) -> Path | None:
    """The folder a pipeline was loaded from (``from_pretrained`` records it), or None."""
    name = getattr(getattr(pipe, "config", None), "_name_or_path", None)
    path = Path(name) if name else None
    return path.resolve() if path is not None and path.is_dir() else None


def calibration_file(settings: Settings, folder: Path) -> Path:
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    return settings.home / "calibration" / f"{folder.name}-{key}.json"


def magcache_ratios(folder: Path | None, settings: Settings | None = None) -> list[float] | None:
    """The stored MagCache ratio curve for the model in ``folder``, or None."""
    if folder is None:
        return None
    candidates = [calibration_file(settings or Settings(), folder), folder / "genaccel.json"]
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ratios = (data.get("magcache") or {}).get("ratios")
        if ratios:
            return [float(r) for r in ratios]
    return None


@torch.no_grad()
def measure_magcache_ratios(pipe: Any, prompts: list[str], steps: int, seed: int = 0, **call: Any) -> list[float]:
    """Mean ratio of the blocks' residual magnitude at each step to the previous step's (1.0 first)."""
    blocks = pipe.transformer.transformer_blocks
    residuals: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []

    def before(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs.append(args[0] if args else kwargs["hidden_states"])

    def after(module: Any, args: tuple[Any, ...], output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        residuals.append((out - inputs[-1]).float())

    hooks = [blocks[0].register_forward_pre_hook(before, with_kwargs=True), blocks[-1].register_forward_hook(after)]
    try:
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        pipe(prompts, num_inference_steps=steps, generator=generators, output_type="latent", **call)
    finally:
        for hook in hooks:
            hook.remove()
    ratios = [1.0]
    for prev, cur in itertools.pairwise(residuals):
        ratios.append(float((cur.norm(dim=-1) / (prev.norm(dim=-1) + 1e-8)).mean()))
    return ratios


def save_magcache_ratios(settings: Settings, folder: Path, ratios: list[float], steps: int) -> Path:
    path = calibration_file(settings, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": str(folder), "magcache": {"steps": steps, "ratios": ratios}}, indent=2) + "\n")
    return path
