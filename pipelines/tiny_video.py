"""Tiny, deterministic, offline video pipelines built from configs (random weights, seeded).

One builder per video family genaccel serves, each the smallest configuration of the real
diffusers classes (the shapes follow diffusers' own pipeline tests), with the in-memory
character tokenizers of ``pipelines.tokenizers``: nothing is downloaded. Their clips are noise;
they exist so the whole video path (validation, caches, writers, queue) runs in tests.

CogVideoX and Stable Video Diffusion build here too (``tiny-cogvideox``, ``tiny-svd``); SVD takes an
image and no prompt. SVD's CLIP image encoder sees the image at 224 px whatever the clip's size
(the pipeline resizes it), so its tiny encoder has 56-px patches.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    LattePipeline,
    LatteTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    MotionAdapter,
    UNet2DConditionModel,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from pipelines.tokenizers import byte_clip_tokenizer, char_t5_tokenizer

MAX_TOKENS = 64


def _vae8() -> AutoencoderKL:
    """An image VAE that downsamples 8x like real ones (64 px -> 8x8 latents): the tiny image
    VAE's 2x would give the video UNet and Latte 32x32 latents per frame, slow for no purpose."""
    return AutoencoderKL(
        block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1,
    )


def _t5(tokenizer: Any) -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4,
                                   num_layers=2)).eval()


def _wan_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _wan_transformer(in_channels: int) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )


def build_tiny_wan(seed: int = 0) -> WanPipeline:
    """Wan 2.x text-to-video: UMT5-style encoder + WanTransformer3DModel + AutoencoderKLWan."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(MAX_TOKENS)
        vae, text_encoder, transformer = _wan_vae(), _t5(tokenizer), _wan_transformer(16)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))


def build_tiny_wan_i2v(seed: int = 0) -> WanImageToVideoPipeline:
    """Wan 2.2-style image-to-video: the first frame's latents and a mask are concatenated to the
    noise (16 + 16 + 4 input channels); no CLIP image encoder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(MAX_TOKENS)
        vae, text_encoder, transformer = _wan_vae(), _t5(tokenizer), _wan_transformer(36)
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                   image_encoder=None, image_processor=None)


def build_tiny_ltx(seed: int = 0) -> LTXPipeline:
    """LTX-Video: T5 + LTXVideoTransformer3DModel + AutoencoderKLLTXVideo (8 latent channels)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(MAX_TOKENS)
        text_encoder = _t5(tokenizer)
        transformer = LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
            attention_head_dim=8, cross_attention_dim=32, num_layers=2, caption_channels=32,
        )
        vae = AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
            encoder_causal=True, decoder_causal=False,
        )
        vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return LTXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler())


def build_tiny_animatediff(seed: int = 0) -> AnimateDiffPipeline:
    """AnimateDiff: an SD image UNet with a MotionAdapter (16-frame motion modules) and CLIP."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = byte_clip_tokenizer()
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4,
        )
        adapter = MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_norm_num_groups=4,
                                motion_num_attention_heads=2, motion_max_seq_length=32)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
            num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77,
        )).eval()
        vae = _vae8()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                              steps_offset=1)
    return AnimateDiffPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               motion_adapter=adapter, scheduler=scheduler, feature_extractor=None,
                               image_encoder=None)


LATTE_FRAMES = 8
"""Frames of the tiny Latte: its temporal position embedding is fixed at this length."""


def build_tiny_latte(seed: int = 0, video_length: int = LATTE_FRAMES) -> LattePipeline:
    """Latte: PixArt-style spatial blocks alternating with temporal blocks, T5 + image VAE."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(MAX_TOKENS)
        text_encoder = _t5(tokenizer)
        transformer = LatteTransformer3DModel(
            sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
            caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6, video_length=video_length,
        )
        vae = _vae8()
    return LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=DDIMScheduler())


def build_tiny_cogvideox(seed: int = 0) -> Any:
    """CogVideoX text-to-video: T5 + CogVideoXTransformer3DModel + AutoencoderKLCogVideoX."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(MAX_TOKENS)
        text_encoder = _t5(tokenizer)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=MAX_TOKENS,
        )
        vae = AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
        )
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=DDIMScheduler())


def build_tiny_svd(seed: int = 0) -> Any:
    """Stable Video Diffusion image-to-video: CLIP image encoder + spatio-temporal UNet + temporal decoder."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=8, out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
            num_attention_heads=4, projection_class_embeddings_input_dim=96, addition_time_embed_dim=32,
        )
        vae = AutoencoderKLTemporalDecoder(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                                           down_block_types=["DownEncoderBlock2D"] * 2, latent_channels=4)
        # GroupNorm(32) throughout the SVD UNet and VAE: 32 channels at least. The pipeline resizes
        # the image to 224 px for CLIP: 224 / 56 = 4x4 patches
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224,
            intermediate_size=37, patch_size=56,
        )).eval()
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=EulerDiscreteScheduler(),
                                        feature_extractor=CLIPImageProcessor(crop_size=224, size=224))


def build_tiny_ltx_i2v(seed: int = 0) -> Any:
    """LTX-Video image-to-video: the same components as ``build_tiny_ltx``; the image's latents
    condition the first latent frame."""
    from diffusers import LTXImageToVideoPipeline

    return LTXImageToVideoPipeline(**build_tiny_ltx(seed).components)
