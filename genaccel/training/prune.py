"""``genaccel prune``: structural pruning of a denoiser, ranked by a calibration pass in latent
space (LD-Pruner, Castells et al. 2024), then optional recovery by distillation from the unpruned
teacher (BK-SDM, Kim et al. 2023: output and feature distillation plus the denoising loss; here
the output loss also covers the classifier-free-guided prediction, see distill.py).

Units are the parts a model config can drop, so the pruned model is an ordinary diffusers
pipeline that loads anywhere:

* SD-architecture UNets: the mid block (``mid_block_type=None``) and the transformer layers of
  each down or up block (a ``CrossAttn*Block2D`` becomes a ``*Block2D``; BK-SDM removes the same
  kind of parts);
* PixArt-style DiTs: whole transformer blocks (``num_layers`` shrinks and the kept blocks are
  renumbered), the depth pruning of TinyFusion (Fang et al. 2025), whose learned choice of blocks
  is replaced here by the same calibration ranking, then recovered by distillation.

Calibration: every unit is replaced by the identity in turn and the change of the denoiser's
noise prediction is measured on real latents noised at random timesteps with their captions
(guided and unguided), as the mean squared difference relative to the prediction's own
magnitude. The least important units are removed, in that order, until the removed parameters
reach the target ratio of the denoiser's. Why our own: no maintained library prunes diffusers
denoisers structurally (diffusers and peft have no pruning; torch.nn.utils.prune only masks
weights).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from genaccel.errors import InvalidRequest

log = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
"""Noisy latents, timesteps, text embeddings, their attention mask (DiTs)."""
DIT_BLOCKS = "transformer_blocks"


@dataclass(frozen=True)
class Unit:
    """One removable part: ``mid_block``, ``down_blocks.N.attentions``, ``up_blocks.N.attentions``
    (UNets) or ``transformer_blocks.N`` (DiTs)."""

    name: str
    params: int


@dataclass(frozen=True)
class PrunePlan:
    ratio: float
    """Removed share of the denoiser's parameters."""
    removed: list[str]
    importance: dict[str, float]
    params_before: int
    params_after: int


def is_dit(model: Any) -> bool:
    return getattr(model, DIT_BLOCKS, None) is not None and not hasattr(model, "down_blocks")


def denoiser_of(pipe: Any) -> Any:
    return pipe.unet if getattr(pipe, "unet", None) is not None else getattr(pipe, "transformer", None)


def units(unet: Any) -> list[Unit]:
    """The removable units of ``unet`` (a UNet or a DiT) with their parameter counts."""
    if is_dit(unet):
        return [Unit(f"{DIT_BLOCKS}.{i}", _count(b)) for i, b in enumerate(getattr(unet, DIT_BLOCKS))]
    found = []
    if unet.mid_block is not None:
        found.append(Unit("mid_block", _count(unet.mid_block)))
    for kind in ("down_blocks", "up_blocks"):
        for i, block in enumerate(getattr(unet, kind)):
            attentions = getattr(block, "attentions", None)
            if attentions:
                found.append(Unit(f"{kind}.{i}.attentions", _count(attentions)))
    return found


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _call(model: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    from genaccel.training.distill import _PixArtFamily, _UNetFamily

    return (_PixArtFamily.call if is_dit(model) else _UNetFamily.call)(model, x, t, cond, mask, None)


def _identity_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    hidden = args[0] if args else kwargs["hidden_states"]
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, torch.Tensor):
        return hidden
    return type(output)(sample=hidden)


@contextmanager
def disabled(unet: Any, name: str) -> Iterator[None]:
    """Run ``unet`` with unit ``name`` replaced by the identity."""
    part = unet.get_submodule(name)
    modules = list(part) if isinstance(part, torch.nn.ModuleList) else [part]
    handles = [m.register_forward_hook(_identity_hook, with_kwargs=True) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def importance(unet: Any, batches: list[Batch],
               progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Relative output change per unit over calibration ``batches`` of (noisy, t, text embeddings, mask)."""
    reference = [_call(unet, *batch) for batch in batches]
    scale = sum(float(r.square().mean()) for r in reference)
    scores = {}
    candidates = units(unet)
    for n, unit in enumerate(candidates, 1):
        with disabled(unet, unit.name):
            change = sum(float((_call(unet, *batch) - r).square().mean())
                         for batch, r in zip(batches, reference, strict=True))
        scores[unit.name] = change / scale
        if progress:
            progress(n, len(candidates))
    return scores


def plan(unet: Any, scores: dict[str, float], ratio: float) -> PrunePlan:
    """Remove the least important units until at least ``ratio`` of the parameters are gone."""
    if not 0 < ratio < 1:
        raise InvalidRequest("ratio", ratio, "must be between 0 and 1", "pass e.g. --ratio 0.3")
    total = _count(unet)
    sizes = {u.name: u.params for u in units(unet)}
    removed, gone = [], 0
    for name in sorted(scores, key=scores.__getitem__):
        if gone >= ratio * total:
            break
        removed.append(name)
        gone += sizes[name]
    if gone < ratio * total:
        raise InvalidRequest("ratio", ratio, f"needs more than the removable units hold "
                             f"({gone / total:.0%} of the denoiser)", f"pass --ratio {gone / total:.2f} or less")
    return PrunePlan(gone / total, removed, scores, total, total - gone)


def pruned_denoiser(model: Any, removed: list[str]) -> Any:
    """A new, smaller denoiser without the ``removed`` units, holding the remaining weights."""
    return pruned_transformer(model, removed) if is_dit(model) else pruned_unet(model, removed)


def pruned_transformer(model: Any, removed: list[str]) -> Any:
    """A DiT with fewer blocks: the kept ones renumbered in order, every other weight as it was."""
    count = len(getattr(model, DIT_BLOCKS))
    keep = [i for i in range(count) if f"{DIT_BLOCKS}.{i}" not in removed]
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    config["num_layers"] = len(keep)
    small = type(model).from_config(config).to(model.dtype)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(DIT_BLOCKS + "."):
            _, index, rest = key.split(".", 2)
            if int(index) not in keep:
                continue
            key = f"{DIT_BLOCKS}.{keep.index(int(index))}.{rest}"
        state[key] = value
    small.load_state_dict(state, strict=True)
    return small


def pruned_unet(unet: Any, removed: list[str]) -> Any:
    """A new, smaller UNet without the ``removed`` units, holding the remaining weights."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    for name in removed:
        if name == "mid_block":
            config["mid_block_type"] = None
            continue
        kind, index, _ = name.split(".")
        types = down if kind == "down_blocks" else up
        types[int(index)] = types[int(index)].replace("CrossAttn", "")
    config.update(down_block_types=tuple(down), up_block_types=tuple(up))
    small = UNet2DConditionModel.from_config(config).to(unet.dtype)
    state = {k: v for k, v in unet.state_dict().items() if not any(k.startswith(n + ".") for n in removed)}
    missing, unexpected = small.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"pruned UNet does not match the remaining weights: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return small


def calibration_batches(pipe: Any, count: int, seed: int, batch: int = 16) -> list[Batch]:
    """Reference-generator latents noised at random timesteps, with their captions' embeddings
    (one in ten unguided, as the sampler also calls the UNet with the empty prompt)."""
    from genaccel.training.distill import reference_latents

    latents, captions = reference_latents(pipe, count, seed)
    gen = torch.Generator().manual_seed(seed)
    scheduler = pipe.scheduler
    out: list[Batch] = []
    for i in range(0, count, batch):
        x0 = latents[i:i + batch]
        words = [c if torch.rand(1, generator=gen).item() > 0.1 else "" for c in captions[i:i + batch]]
        cond, mask = _embed(pipe, words)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        out.append((_add_noise(scheduler, x0, noise, t), t, cond, mask))
    return out


@torch.no_grad()
def _embed(pipe: Any, words: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    tok = pipe.tokenizer
    if is_dit(denoiser_of(pipe)):
        enc = tok(words, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  add_special_tokens=True, return_tensors="pt")
        return pipe.text_encoder(enc.input_ids, attention_mask=enc.attention_mask)[0], enc.attention_mask
    ids = tok(words, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0], None


def _add_noise(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config).add_noise(x0, noise, t)


def chosen_plan(unet: Any, scores: dict[str, float], names: list[str]) -> PrunePlan:
    """The plan that removes exactly ``names`` (a user's choice instead of the ranking)."""
    sizes = {u.name: u.params for u in units(unet)}
    unknown = [n for n in names if n not in sizes]
    if unknown or not names or len(set(names)) != len(names):
        raise InvalidRequest("remove", ",".join(names), f"must name distinct removable units of this denoiser: "
                             f"{', '.join(sizes)}", "pick from those names, comma-separated")
    total = _count(unet)
    gone = sum(sizes[n] for n in names)
    return PrunePlan(gone / total, list(names), scores, total, total - gone)


def prune(pipe: Any, name: str, out: Path, work: Path, *, ratio: float, calibration: int = 64,
          recover_steps: int = 0, batch: int = 8, lr: float = 1e-4, seed: int = 0,
          remove: list[str] | None = None, defaults: dict[str, Any] | None = None,
          progress: Callable[[str], Callable[[int, int, float], None]] | None = None) -> PrunePlan:
    """Rank, remove (the least important units down to ``ratio``, or exactly ``remove``),
    optionally recover, and save the pruned pipeline to ``out`` (fp16); ``defaults`` (the teacher's
    steps, guidance, size) go in its model card so it renders like its teacher."""
    from genaccel.training.distill import DistillConfig, Distiller, reference_latents

    unet = denoiser_of(pipe)
    if unet is None or not units(unet):
        raise InvalidRequest("model", name, "genaccel prune removes UNet blocks of SD-architecture models and "
                             "transformer blocks of PixArt-style DiTs only",
                             "pick an SD-UNet or PixArt model such as shapes-sd or shapes-dit")
    for module in (unet, pipe.text_encoder, pipe.vae):
        module.requires_grad_(False).eval()
    bar = progress("calibrate") if progress else None
    scores = importance(unet, calibration_batches(pipe, calibration, seed + 11),
                        (lambda n, total: bar(n, total, 0.0)) if bar else None)
    chosen = chosen_plan(unet, scores, remove) if remove else plan(unet, scores, ratio)
    log.info("removing %s (%.1f%% of %d parameters)", chosen.removed, 100 * chosen.ratio, chosen.params_before)
    student = pruned_denoiser(unet, chosen.removed).float()
    losses: list[float] = []
    if recover_steps:
        config = DistillConfig(mode="kd", steps=recover_steps, batch=batch, lr=lr, seed=seed)
        distiller = Distiller(pipe, config, student=student)
        work.mkdir(parents=True, exist_ok=True)
        # enough reference latents for the recovery (4000 at most, as many as a real run uses)
        latents, captions = reference_latents(pipe, max(64, min(4000, recover_steps * batch * 4)), seed + 7)
        losses = distiller.train(latents, captions, work / "pruned.pt",
                                 progress=progress("recover") if progress else None)
        student = distiller.student
    save_pruned(pipe, student, out, name, chosen, losses, defaults)
    return chosen


def save_pruned(pipe: Any, unet: Any, out: Path, name: str, chosen: PrunePlan, losses: list[float],
                defaults: dict[str, Any] | None = None) -> None:
    from genaccel.training.common import plot_loss
    from genaccel.training.distill import teacher_family

    small = teacher_family(pipe).pipeline(unet.eval(), pipe.scheduler)
    out.mkdir(parents=True, exist_ok=True)
    dtype = denoiser_of(pipe).dtype
    small.to(torch.float16).save_pretrained(out, safe_serialization=True)
    pipe.to(dtype)
    card = {"pruned_from": name, "mode": "prune", "prune": asdict(chosen), "recover_steps": len(losses),
            **({"defaults": defaults} if defaults else {})}
    (out / "genaccel.json").write_text(json.dumps(card, indent=2) + "\n")
    if losses:
        plot_loss(losses, out / "loss_curve.png", f"{name} pruned by {chosen.ratio:.0%}: recovery")
