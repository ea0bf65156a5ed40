"""Latent diffusion training shared by the reference models: a VAE on generated images, latents
cached once, then a denoiser and its text encoder trained together (epsilon prediction,
scaled-linear betas like Stable Diffusion, min-SNR weighting (Hang et al. 2023), caption dropout
for classifier-free guidance, EMA of the weights). Every stage resumes from its checkpoint.

Captions are drawn afresh every step, half in the fixed full form and half as natural captions
(attributes left out, synonyms, other orders: ``CaptionSampler``), so the model reads the words
users type (issue 15).

``fg_weight`` (off by default) gives the latent cells a shape covers a fixed share of each
sample's loss. It does not belong in a diffusion loss: a weight that depends on the clean image
tilts the optimal denoiser from E[x0 | xt] to E[w x0 | xt] / E[w | xt], which over-represents
shapes wherever one might be. Measured: after 2000 steps with ``fg_weight=1`` shapes-sd drew the
small shape at all four corners at once (position accuracy 0.21 on 32 prompts, against 0.93 for
the earlier model after 3000 steps without it; natural captions were new in that run too, so
this is not a clean comparison, but phantom copies are what the tilt predicts). It is kept only
to reproduce the first stage of the shipped runs, which continued without it (their
``train_log.json``). The VAE's reconstruction loss is another matter: there the weighting is
harmless and sharpens small outlines (``foreground_weights``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr

from genaccel.refdata.shapes import ShapeSpec, make_dataset
from genaccel.training.common import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
Progress = Callable[[int, int, float], None]
Forward = Callable[[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> float (N, 3, 64, 64) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def foreground_mask(images: np.ndarray, specs: list[ShapeSpec]) -> torch.Tensor:
    """(N, 1, H, W) float mask of the pixels that differ from each image's background colour."""
    from genaccel.refdata.shapes import BACKGROUNDS

    bg = np.array([BACKGROUNDS[s.background] for s in specs], dtype=np.int16)[:, None, None, :]
    return torch.from_numpy((np.abs(images.astype(np.int16) - bg).max(axis=-1) > 24).astype(np.float32))[:, None]


def share_weights(mask: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-element weights (mean 1 over each image) giving the masked elements the share
    ``weight / (1 + weight)`` of the image's loss, whatever the mask's size."""
    fg = mask.mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3, max=1 - 1e-3)
    return (1 - mask) / (1 - fg) * (1 / (1 + weight)) + mask / fg * (weight / (1 + weight))


def foreground_weights(images: np.ndarray, specs: list[ShapeSpec], weight: float) -> torch.Tensor:
    """Per-pixel loss weights (N, 1, H, W) that give the shape (pixels that differ from the
    background colour) the share ``weight / (1 + weight)`` of each image's loss, whatever its size.
    The shape covers 4-17 % of the image, so an unweighted loss is mostly background and the VAE
    learns the outline of small shapes last."""
    return share_weights(foreground_mask(images, specs), weight)


def train_vae(vae: AutoencoderKL, steps: int, batch: int, seed: int, ckpt: Path,
              progress: Progress | None = None, fg_weight: float = 1.0, edge_weight: float = 1.0,
              sample: bool = False, lr: float = 1e-3) -> list[float]:
    """Reconstruction training on fresh images each step (resumable): L1 + L2 with the shape's
    pixels given ``fg_weight : 1`` of each image's loss (``foreground_weights``), an image-gradient
    term (``edge_weight``) for sharp outlines, and a small KL term. ``sample=False`` decodes the
    posterior mean (SD samples it; at this size the sampling noise only slows the outlines down).
    The learning rate follows a cosine from ``lr`` down to ``lr / 10``."""
    import math

    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    state = load_checkpoint(ckpt)
    start, losses = 0, []
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if "sched" in state:
            sched.load_state_dict(state["sched"])
        start, losses = int(state["step"]), list(state["losses"])
    vae.train()
    for step in range(start, steps):
        images, specs = make_dataset(batch, seed * 1_000_003 + step, split="all")
        x = to_pixels(images)
        w = foreground_weights(images, specs, fg_weight)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample() if sample else posterior.mode()).sample
        err = (recon - x).abs()
        loss = ((err + 0.5 * err.square()) * w).sum() / (w.sum() * 3) + 1e-6 * posterior.kl().mean()
        if edge_weight:
            loss = loss + edge_weight * sum(
                ((recon.diff(dim=d) - x.diff(dim=d)).abs() * w.narrow(d, 0, w.shape[d] - 1)).mean() for d in (2, 3))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, steps, losses[-1])
        if (step + 1) % 200 == 0 or step + 1 == steps:
            save_checkpoint(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                   "step": step + 1, "losses": losses})
    vae.eval()
    return losses


@torch.no_grad()
def vae_report(vae: AutoencoderKL, evaluator_dir: Path, count: int = 256, seed: int = 12345) -> dict[str, float]:
    """How well VAE reconstructions of fresh images keep what their captions name: per-attribute
    evaluator accuracy, exact match (every attribute right) by the evaluator and by the template
    check (nothing learned). A denoiser cannot draw what the VAE cannot reconstruct, so this
    gates the denoiser stage."""
    from genaccel.metrics.evaluator import Evaluator
    from genaccel.metrics.template import read_templates
    from genaccel.refdata.shapes import ATTRIBUTES

    images, specs = make_dataset(count, seed, split="all")
    recon = vae.decode(vae.encode(to_pixels(images)).latent_dist.mean).sample
    pixels = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    predictions = Evaluator.load(evaluator_dir).predict(pixels)
    report = {attr: float(np.mean([p[attr] == getattr(s, attr) for p, s in zip(predictions, specs, strict=True)]))
              for attr in ATTRIBUTES}
    report["exact_match"] = float(np.mean([all(p[a] == getattr(s, a) for a in ATTRIBUTES)
                                           for p, s in zip(predictions, specs, strict=True)]))
    few = min(count, 64)  # the template check costs ~0.1 s an image
    templates = read_templates(pixels[:few])
    report["template_exact_match"] = float(np.mean([bool(t) and all(v == getattr(s, a) for a, v in t.items())
                                                    for t, s in zip(templates, specs[:few], strict=True)]))
    return report


class CaptionSampler:
    """Captions for a training batch: each sample's fixed full caption, or with probability
    ``natural`` a :func:`~genaccel.refdata.shapes.natural_caption` drawn afresh (deterministic in
    ``seed`` and the step, so a resumed run sees the same captions)."""

    def __init__(self, specs: list[ShapeSpec], natural: float = 0.5, seed: int = 0) -> None:
        self.specs, self.natural, self.seed = specs, natural, seed

    def __call__(self, idx: torch.Tensor, step: int) -> list[str]:
        rng = np.random.default_rng([self.seed, step])
        return [self.specs[i].caption(rng) if rng.random() < self.natural else self.specs[i].caption()
                for i in idx.tolist()]


def encode_prompts(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def train_denoiser(
    denoiser: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer: Any, forward: Forward,
    latents: torch.Tensor, captions: CaptionSampler, steps: int, batch: int, seed: int,
    ckpt: Path, lr: float = 5e-4, cfg_dropout: float = 0.1, snr_gamma: float = 5.0,
    offset_noise: float = 0.0, offset_from: int = 0, progress: Progress | None = None,
    masks: torch.Tensor | None = None, fg_weight: float = 0.0, deadline: float | None = None,
) -> tuple[list[float], EMAModel]:
    """Train a denoiser and its text encoder together on scaled latents: epsilon prediction,
    min-SNR weighting, caption dropout (for CFG), EMA; resumable from ``ckpt``.

    ``forward(denoiser, text_encoder, noisy, t, tokens)`` returns the predicted noise.
    ``captions(idx, step)`` gives the batch's captions; ``masks`` (N, 1, h, w), the latent cells
    each shape covers, get the share ``fg_weight / (1 + fg_weight)`` of each sample's loss.
    ``deadline`` (a ``time.time()`` value) ends training early, with a checkpoint, at the first
    step past it; the step reached is ``len(losses)``.

    ``offset_noise`` (from step ``offset_from`` on) adds a per-sample, per-channel constant to
    the noise (Guttenberg 2023, "Diffusion with offset noise"): with SD's schedule the last step
    still leaks the image's mean colour, so without it the model learns to read colour from that
    leak instead of from the prompt, and samples drawn from pure noise get the wrong colours.
    """
    scheduler = noise_scheduler()
    params = [*denoiser.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    ema = EMAModel(params, decay=0.999, use_ema_warmup=True, power=2 / 3)
    empty = encode_prompts(tokenizer, [""])[0]
    state = load_checkpoint(ckpt)
    start, losses = 0, []
    if state is not None:
        denoiser.load_state_dict(state["denoiser"] if "denoiser" in state else state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        ema.load_state_dict(state["ema"])
        start, losses = int(state["step"]), list(state["losses"])
        if "rng" in state:
            torch.set_rng_state(state["rng"])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(start):  # replay the data order so a resumed run sees the same batches
        torch.randint(len(latents), (batch,), generator=gen)
        torch.rand(batch, generator=gen)
    denoiser.train()
    text_encoder.train()
    for step in range(start, steps):
        idx = torch.randint(len(latents), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < cfg_dropout
        x0 = latents[idx]
        tokens = torch.where(drop[:, None], empty[None], encode_prompts(tokenizer, captions(idx, step)))
        noise = torch.randn_like(x0)
        if offset_noise and step >= offset_from:
            noise = noise + offset_noise * torch.randn(x0.shape[0], x0.shape[1], 1, 1)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,))
        noisy = scheduler.add_noise(x0, noise, t)
        pred = forward(denoiser, text_encoder, noisy, t, tokens)
        snr = compute_snr(scheduler, t)
        weight = torch.clamp(snr, max=snr_gamma) / snr
        err = F.mse_loss(pred, noise, reduction="none")
        if masks is not None and fg_weight:
            err = err * share_weights(masks[idx], fg_weight)
        loss = (err.mean(dim=(1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        losses.append(loss.item())
        if progress:
            progress(step + 1, steps, losses[-1])
        late = deadline is not None and time.time() > deadline
        if (step + 1) % 250 == 0 or step + 1 == steps or late:
            save_checkpoint(ckpt, {
                "denoiser": denoiser.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "ema": ema.state_dict(), "step": step + 1, "losses": losses,
                "rng": torch.get_rng_state(),
            })
        if late:
            log.warning("time budget reached at step %d of %d", step + 1, steps)
            break
    return losses, ema


@torch.no_grad()
def cached_latents(vae: AutoencoderKL, work: Path, count: int, seed: int, max_rotation: float | None = None
                   ) -> tuple[torch.Tensor, list[ShapeSpec], torch.Tensor]:
    """Latents (unscaled), specs and latent-resolution shape masks of ``count`` training-split
    images, cached in ``work`` (redone when the VAE checkpoint is newer than the cache). A mask
    cell is 1 where the shape touches it (max-pooled pixel mask). ``max_rotation``: see
    :func:`genaccel.refdata.shapes.render`."""
    tilt = "" if max_rotation is None else f"-tilt{math.degrees(max_rotation):g}"
    cache = work / f"latents-{count}-{seed}{tilt}-v2.pt"
    vae_ckpt = work / "vae.pt"
    fresh = cache.is_file() and (not vae_ckpt.is_file() or vae_ckpt.stat().st_mtime < cache.stat().st_mtime)
    if fresh:
        stored = torch.load(cache, weights_only=True)
        return stored["latents"], [ShapeSpec(**s) for s in stored["specs"]], stored["masks"]
    images, specs = make_dataset(count, seed, split="train", max_rotation=max_rotation)
    raw = torch.cat([vae.encode(to_pixels(images[i:i + 256])).latent_dist.mean for i in range(0, count, 256)])
    factor = images.shape[1] // raw.shape[-1]
    masks = F.max_pool2d(foreground_mask(images, specs), factor)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": raw, "specs": [s.as_dict() for s in specs], "masks": masks}, cache)
    return raw, specs, masks
