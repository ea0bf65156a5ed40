"""Tiny, deterministic, offline pipelines built from configs (random weights, seeded).

They exercise the whole job path without any download: ``tiny-sd`` is a Stable-Diffusion-style
UNet pipeline, ``tiny-dit`` a PixArt-style transformer pipeline. Their pictures are noise-like;
the reference models in ``assets/`` are the ones trained to draw what the prompt says.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from pipelines.tokenizers import byte_clip_tokenizer, char_t5_tokenizer


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )


def build_tiny_sd(seed: int = 0) -> StableDiffusionPipeline:
    """SD-architecture pipeline: CLIP text encoder + UNet2DConditionModel + AutoencoderKL."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = byte_clip_tokenizer()
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4,
        )
        vae = tiny_vae()
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
            num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77,
        )).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )


def build_tiny_dit(seed: int = 0) -> PixArtAlphaPipeline:
    """PixArt-α-architecture pipeline: T5 encoder + PixArtTransformer2DModel + AutoencoderKL."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(120)
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
        )).eval()
        transformer = PixArtTransformer2DModel(
            sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
            caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6,
        )
        vae = tiny_vae()
    scheduler = DPMSolverMultistepScheduler()
    return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                               transformer=transformer, scheduler=scheduler)
