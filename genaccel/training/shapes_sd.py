"""``shapes-sd``: a Stable-Diffusion-architecture latent diffusion model trained on the
procedural shapes data (AutoencoderKL + CLIP text encoder + UNet2DConditionModel).

Two stages (``latent_diffusion``): the VAE (64x64 RGB -> 16x16x4), then UNet and text encoder
together on cached latents.

Position words ("top left") were the hard part. With a three-level UNet (16, 8, 4) and CLIP's
token-embedding init (std 0.02) the model never used them in 3000 steps: the encoded "top"
and "bottom" stayed nearly equal (the UNet did not use them, so nothing separated them) and the
UNet had no cheap way to tell quadrants apart. Token embeddings initialised at std 1.0 and a
fourth level (a 2x2 bottleneck, one cell per quadrant) together learn position by step 1000.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from genaccel.refdata.shapes import caption_vocabulary
from genaccel.training.common import plot_loss
from genaccel.training.latent_diffusion import (
    CaptionSampler,
    Progress,
    cached_latents,
    train_denoiser,
    train_vae,
    vae_report,
)
from pipelines.tokenizers import word_clip_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapesSDConfig:
    unet_channels: tuple[int, ...] = (64, 128, 128, 128)
    """16x16 latents halve per level: four levels reach a 2x2 bottleneck whose cells are the image
    quadrants, which is where the UNet learns position words (three levels never did)."""
    text_hidden: int = 64
    text_layers: int = 2
    max_tokens: int = 32
    """Natural captions ("a big purple disc, in the lower-left corner, against a gray background")
    run to about 20 tokens with commas and hyphens."""
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_batch: int = 16
    attention_all_levels: bool = False
    """Cross-attention at full latent resolution too (like SD 1.5's first three levels)."""
    token_init_std: float | None = 1.0
    """Initial std of the text encoder's token embeddings (CLIP's is 0.02). With CLIP's, words
    the UNet does not use yet (position words) stay nearly equal after encoding, so it never
    starts to use them; distinct words from the start break that circle."""


def build_components(cfg: ShapesSDConfig, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    tokenizer = word_clip_tokenizer(caption_vocabulary(), max_length=cfg.max_tokens)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * 4,
        num_attention_heads=4, num_hidden_layers=cfg.text_layers, max_position_embeddings=cfg.max_tokens,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    if cfg.token_init_std is not None:
        torch.nn.init.normal_(text_encoder.get_input_embeddings().weight, std=cfg.token_init_std)
    levels = len(cfg.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=cfg.unet_channels, layers_per_block=1,
        # attention only below full latent resolution: at 16x16 it costs most and adds little here
        down_block_types=("CrossAttnDownBlock2D" if cfg.attention_all_levels else "DownBlock2D",)
        + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1)
        + ("CrossAttnUpBlock2D" if cfg.attention_all_levels else "UpBlock2D",),
        cross_attention_dim=cfg.text_hidden, attention_head_dim=32, norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=cfg.vae_channels, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        norm_num_groups=16, down_block_types=["DownEncoderBlock2D"] * len(cfg.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(cfg.vae_channels), sample_size=64,
    )
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "vae": vae}


def unet_forward(unet: torch.nn.Module, text_encoder: torch.nn.Module, noisy: torch.Tensor, t: torch.Tensor,
                 tokens: torch.Tensor) -> torch.Tensor:
    return unet(noisy, t, text_encoder(tokens)[0]).sample


def assemble_pipeline(parts: dict[str, Any]) -> StableDiffusionPipeline:
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    pipe = StableDiffusionPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"].eval(), tokenizer=parts["tokenizer"],
        unet=parts["unet"].eval(), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_vae(vae: AutoencoderKL, work: Path, gate: float = 0.98, count: int = 256) -> dict[str, float]:
    """Write ``work/vae_report.json`` (on ``count`` fresh images; 32 when the gate is off); refuse
    to go on to the denoiser stage when reconstructions keep every attribute of fewer than
    ``gate`` of the images (exact match by the evaluator)."""
    evaluator = Path(__file__).resolve().parents[2] / "assets" / "evaluator"
    if not (evaluator / "config.json").is_file():
        return {}
    report = vae_report(vae, evaluator, count=count if gate > 0 else min(count, 32))
    work.mkdir(parents=True, exist_ok=True)
    (work / "vae_report.json").write_text(json.dumps(report, indent=2) + "\n")
    weak = {k: v for k, v in report.items() if v < 0.98}
    if weak:
        log.warning("VAE reconstructions lose %s (evaluator accuracy)", weak)
    if report["exact_match"] < gate:
        raise RuntimeError(f"VAE gate: reconstructions keep every attribute of {report['exact_match']:.1%} of the "
                           f"images, under the {gate:.0%} the denoiser stage needs (see {work / 'vae_report.json'}); "
                           "train the VAE longer (--vae-steps) or change it, or pass --vae-gate 0 to go on anyway")
    return report


def train_shapes_sd(
    out: Path, work: Path, *, vae_steps: int, unet_steps: int, batch: int = 32, data: int = 20000,
    seed: int = 0, cfg: ShapesSDConfig | None = None, progress: Callable[[str], Progress] | None = None,
    offset_noise: float = 0.0, offset_from: int = 0, vae_only: bool = False, vae_from: Path | None = None,
    vae_gate: float = 0.98, natural: float = 0.5, fg_weight: float = 0.0,
    deadline: float | None = None, max_rotation: float | None = None,
) -> StableDiffusionPipeline | None:
    """Train both stages (each resumes from ``work``) and save the pipeline to ``out`` in fp16.
    The trained VAE is also saved to ``work/vae`` (``shapes-dit`` can reuse it); ``vae_only``
    stops there. ``vae_from`` (a pipeline or VAE folder) skips the VAE stage."""
    cfg = cfg or ShapesSDConfig()
    parts = build_components(cfg, seed)
    t0 = time.time()
    vae_losses: list[float] = []
    if vae_from is not None:
        folder = vae_from / "vae" if (vae_from / "vae").is_dir() else vae_from
        parts["vae"] = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, use_safetensors=True).eval()
    else:
        vae_losses = train_vae(parts["vae"], vae_steps, batch=cfg.vae_batch, seed=seed, ckpt=work / "vae.pt",
                               progress=progress("vae") if progress else None)
        plot_loss(vae_losses, work / "vae_loss.png", "shapes-sd VAE")
    parts["vae"].save_pretrained(work / "vae", safe_serialization=True)
    check_vae(parts["vae"], work, vae_gate)
    if vae_only:
        return None
    latents, specs, masks = cached_latents(parts["vae"], work, data, seed + 1, max_rotation)
    scale = float(1.0 / latents.flatten().std())
    parts["vae"].register_to_config(scaling_factor=scale)
    log.info("vae scaling factor %.4f (%.0f s)", scale, time.time() - t0)
    losses, ema = train_denoiser(parts["unet"], parts["text_encoder"], parts["tokenizer"], unet_forward,
                                 latents * scale, CaptionSampler(specs, natural, seed), unet_steps, batch, seed,
                                 work / "unet.pt", offset_noise=offset_noise, offset_from=offset_from,
                                 masks=masks, fg_weight=fg_weight, deadline=deadline,
                                 progress=progress("unet") if progress else None)
    ema.copy_to([*parts["unet"].parameters(), *parts["text_encoder"].parameters()])
    pipe = assemble_pipeline(parts)
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    plot_loss(losses, out / "loss_curve.png", "shapes-sd UNet + text encoder (min-SNR weighted)")
    if vae_losses:
        plot_loss(vae_losses, out / "vae_loss_curve.png", "shapes-sd VAE")
    return pipe.to(torch.float32)
