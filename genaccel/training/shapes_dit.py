"""``shapes-dit``: the shapes data with a transformer denoiser, PixArt-α architecture
(AutoencoderKL + T5 encoder + PixArtTransformer2DModel), trained like ``shapes-sd``
(``latent_diffusion``). The VAE can be trained here or taken from ``shapes-sd``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel

from genaccel.refdata.shapes import caption_vocabulary
from genaccel.training.common import plot_loss
from genaccel.training.latent_diffusion import CaptionSampler, Progress, cached_latents, train_denoiser, train_vae
from genaccel.training.shapes_sd import ShapesSDConfig, build_components, check_vae
from pipelines.tokenizers import word_t5_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapesDiTConfig:
    layers: int = 8
    heads: int = 4
    head_dim: int = 32
    patch_size: int = 2
    text_dim: int = 64
    text_layers: int = 2
    max_tokens: int = 32


def build_dit_components(cfg: ShapesDiTConfig, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    tokenizer = word_t5_tokenizer(caption_vocabulary(), max_length=cfg.max_tokens)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=cfg.text_dim, d_ff=cfg.text_dim * 4, d_kv=16, num_heads=4,
        num_layers=cfg.text_layers, dropout_rate=0.0,
    ))
    inner = cfg.heads * cfg.head_dim
    transformer = PixArtTransformer2DModel(
        sample_size=16, num_layers=cfg.layers, patch_size=cfg.patch_size, attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads, caption_channels=cfg.text_dim, in_channels=4, out_channels=4,
        cross_attention_dim=inner, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "transformer": transformer}


def dit_forward(transformer: torch.nn.Module, text_encoder: torch.nn.Module, noisy: torch.Tensor, t: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
    mask = (tokens != 0).long()  # <pad> is id 0
    cond = text_encoder(tokens, attention_mask=mask)[0]
    return transformer(noisy, encoder_hidden_states=cond, encoder_attention_mask=mask, timestep=t,
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample


def assemble_dit_pipeline(parts: dict[str, Any], vae: AutoencoderKL) -> PixArtAlphaPipeline:
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    pipe = PixArtAlphaPipeline(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"].eval(), vae=vae,
                               transformer=parts["transformer"].eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def train_shapes_dit(
    out: Path, work: Path, *, vae_steps: int, steps: int, batch: int = 32, data: int = 20000, seed: int = 0,
    vae_from: Path | None = None, cfg: ShapesDiTConfig | None = None,
    progress: Callable[[str], Progress] | None = None, offset_noise: float = 0.1, offset_from: int = 0,
    vae_gate: float = 0.98, natural: float = 0.5, fg_weight: float = 0.0,
    deadline: float | None = None, max_rotation: float | None = None,
) -> PixArtAlphaPipeline:
    """Train (or reuse) the VAE, then transformer + T5 encoder; save the pipeline to ``out`` in fp16."""
    cfg = cfg or ShapesDiTConfig()
    vae_losses: list[float] = []
    if vae_from is not None:
        folder = vae_from / "vae" if (vae_from / "vae").is_dir() else vae_from
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, use_safetensors=True)
    else:
        vae = build_components(ShapesSDConfig(), seed)["vae"]
        vae_losses = train_vae(vae, vae_steps, batch=ShapesSDConfig().vae_batch, seed=seed, ckpt=work / "vae.pt",
                               progress=progress("vae") if progress else None)
    vae.eval()
    vae.save_pretrained(work / "vae", safe_serialization=True)  # the probe (genaccel.training.probe) reads it
    check_vae(vae, work, vae_gate)
    parts = build_dit_components(cfg, seed)
    latents, specs, masks = cached_latents(vae, work, data, seed + 1, max_rotation)
    scale = float(1.0 / latents.flatten().std())
    vae.register_to_config(scaling_factor=scale)
    losses, ema = train_denoiser(parts["transformer"], parts["text_encoder"], parts["tokenizer"], dit_forward,
                                 latents * scale, CaptionSampler(specs, natural, seed), steps, batch, seed,
                                 work / "dit.pt", offset_noise=offset_noise, offset_from=offset_from,
                                 masks=masks, fg_weight=fg_weight, deadline=deadline,
                                 progress=progress("dit") if progress else None)
    ema.copy_to([*parts["transformer"].parameters(), *parts["text_encoder"].parameters()])
    pipe = assemble_dit_pipeline(parts, vae)
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    plot_loss(losses, out / "loss_curve.png", "shapes-dit transformer + text encoder (min-SNR weighted)")
    if vae_losses:
        plot_loss(vae_losses, out / "vae_loss_curve.png", "shapes-dit VAE")
    return pipe.to(torch.float32)
