"""Real-size architectures with random weights, built from their published configs, so speed and
memory can be measured at real sizes although no weights can be downloaded. Quality is never
claimed from these models: their outputs are noise.

Each ``Arch`` builds a diffusers pipeline (or, for the speech decoder, which has no diffusers
pipeline, the bare denoiser with its inputs) at ``real`` size or at a ``tiny`` size of the same
shape for the CPU dry run. Tokenizers are the in-memory ones (``pipelines/tokenizers.py``); text
encoders keep their published widths and depths except where a row says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from genaccel.families import Family
from pipelines.tokenizers import byte_clip_tokenizer, char_t5_tokenizer


def _pick(tiny: bool, small: Any, real: Any) -> Any:
    return small if tiny else real


@dataclass(frozen=True)
class Arch:
    name: str
    family: Family
    published: str
    """Which published model's config the real size copies."""
    build: Callable[[bool], Any]
    """``build(tiny)`` -> a pipeline (or a ``DenoiserOnly``)."""
    call: dict[str, Any] = field(default_factory=dict)
    """Pipeline call arguments at real size (size, frames, duration); ``tiny_call`` for the dry run."""
    tiny_call: dict[str, Any] = field(default_factory=dict)
    steps: int = 50
    """The model's default step count (``off``)."""
    guidance: float = 7.5
    size: str = ""
    """What one output is, in words (``512x512 image``)."""


@dataclass
class DenoiserOnly:
    """A denoiser with example inputs, for architectures without a diffusers pipeline."""

    transformer: torch.nn.Module
    inputs: Callable[[torch.device, torch.dtype], dict[str, Any]]


def _clip(tiny: bool, tokenizer: Any, width: int = 768, layers: int = 12, heads: int = 12,
          projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=len(tokenizer), max_position_embeddings=77,
        hidden_size=_pick(tiny, 32, width), intermediate_size=_pick(tiny, 64, 4 * width),
        num_attention_heads=_pick(tiny, 2, heads), num_hidden_layers=_pick(tiny, 2, layers),
        projection_dim=_pick(tiny, 32, projection or width), hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(tiny: bool, tokenizer: Any, width: int, layers: int, heads: int, ff: int, umt5: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kwargs = dict(vocab_size=len(tokenizer), d_model=_pick(tiny, 32, width), d_ff=_pick(tiny, 64, ff),
                  d_kv=_pick(tiny, 8, 64), num_heads=_pick(tiny, 4, heads), num_layers=_pick(tiny, 2, layers),
                  feed_forward_proj="gated-gelu")
    if umt5:
        return UMT5EncoderModel(UMT5Config(**kwargs)).eval()
    return T5EncoderModel(T5Config(**kwargs)).eval()


def _sd_vae(tiny: bool) -> Any:
    from diffusers import AutoencoderKL

    channels = _pick(tiny, [8, 16], [128, 256, 512, 512])
    return AutoencoderKL(block_out_channels=channels, latent_channels=4, layers_per_block=_pick(tiny, 1, 2),
                         norm_num_groups=_pick(tiny, 4, 32), down_block_types=["DownEncoderBlock2D"] * len(channels),
                         up_block_types=["UpDecoderBlock2D"] * len(channels))


def build_sd15(tiny: bool) -> Any:
    """Stable Diffusion 1.5: UNet 860 M (cross-attention 768), CLIP ViT-L/14 text encoder, SD VAE."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = byte_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=_pick(tiny, (16, 32), (320, 640, 1280, 1280)),
        down_block_types=_pick(tiny, ("CrossAttnDownBlock2D", "DownBlock2D"),
                               ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)),
        up_block_types=_pick(tiny, ("UpBlock2D", "CrossAttnUpBlock2D"),
                             ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        layers_per_block=_pick(tiny, 1, 2), cross_attention_dim=_pick(tiny, 32, 768),
        attention_head_dim=_pick(tiny, 4, 8), norm_num_groups=_pick(tiny, 4, 32), sample_size=_pick(tiny, 8, 64))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=_sd_vae(tiny), text_encoder=_clip(tiny, tokenizer),
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def build_sdxl(tiny: bool) -> Any:
    """SDXL base: UNet 2.6 B (transformer depths 1/2/10, cross-attention 2048, text-time
    conditioning), CLIP ViT-L + OpenCLIP bigG text encoders, SDXL VAE (the SD VAE architecture)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = byte_clip_tokenizer()
    text_1 = _clip(tiny, tokenizer)
    text_2 = _clip(tiny, tokenizer, width=1280, layers=32, heads=20, projection=1280)
    width_1, width_2 = text_1.config.hidden_size, text_2.config.hidden_size
    unet = UNet2DConditionModel(
        block_out_channels=_pick(tiny, (16, 32), (320, 640, 1280)),
        down_block_types=_pick(tiny, ("DownBlock2D", "CrossAttnDownBlock2D"),
                               ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")),
        up_block_types=_pick(tiny, ("CrossAttnUpBlock2D", "UpBlock2D"),
                             ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
        transformer_layers_per_block=_pick(tiny, (1, 1), (1, 2, 10)),
        attention_head_dim=_pick(tiny, (2, 4), (5, 10, 20)), use_linear_projection=True,
        cross_attention_dim=width_1 + width_2, addition_embed_type="text_time",
        addition_time_embed_dim=_pick(tiny, 8, 256),
        projection_class_embeddings_input_dim=_pick(tiny, 8 * 6 + 32, 2816),
        layers_per_block=_pick(tiny, 1, 2), norm_num_groups=_pick(tiny, 4, 32), sample_size=_pick(tiny, 8, 128))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=_sd_vae(tiny), text_encoder=text_1, text_encoder_2=text_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)


def build_pixart(tiny: bool) -> Any:
    """PixArt-α 512: DiT 0.6 B (28 blocks, width 1152), T5-XXL encoder (4.7 B), SD VAE."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    tokenizer = char_t5_tokenizer(120)
    text = _t5(tiny, tokenizer, width=4096, layers=24, heads=64, ff=10240)
    transformer = PixArtTransformer2DModel(
        sample_size=_pick(tiny, 8, 64), num_layers=_pick(tiny, 2, 28), patch_size=2,
        attention_head_dim=_pick(tiny, 8, 72), num_attention_heads=_pick(tiny, 3, 16),
        caption_channels=text.config.d_model, in_channels=4, out_channels=8, cross_attention_dim=_pick(tiny, 24, 1152),
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6)
    return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text, vae=_sd_vae(tiny), transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())


def build_wan(tiny: bool) -> Any:
    """Wan 2.1 T2V 1.3 B: DiT 30 blocks, width 1536, UMT5-XXL encoder (5.7 B), Wan VAE."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tokenizer = char_t5_tokenizer(_pick(tiny, 32, 512))
    text = _t5(tiny, tokenizer, width=4096, layers=24, heads=64, ff=10240, umt5=True)
    transformer = WanTransformer3DModel(
        num_attention_heads=_pick(tiny, 2, 12), attention_head_dim=_pick(tiny, 16, 128),
        ffn_dim=_pick(tiny, 64, 8960), num_layers=_pick(tiny, 2, 30), text_dim=text.config.d_model,
        freq_dim=_pick(tiny, 32, 256), rope_max_seq_len=_pick(tiny, 32, 1024))
    vae = AutoencoderKLWan(base_dim=_pick(tiny, 8, 96), z_dim=16, dim_mult=[1, 2, 4, 4],
                           num_res_blocks=_pick(tiny, 1, 2), temperal_downsample=[False, True, True])
    return WanPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=_pick(tiny, 1.0, 3.0)))


def build_stable_audio(tiny: bool) -> Any:
    """Stable Audio Open 1.0: DiT 1.1 B (24 blocks, width 1536), T5-base encoder, Oobleck VAE
    (stereo, 44.1 kHz). The scheduler is EDM DPM-Solver++, which needs no ``torchsde``."""
    from diffusers import AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

    tokenizer = char_t5_tokenizer(_pick(tiny, 32, 128))
    text = _t5(tiny, tokenizer, width=768, layers=12, heads=12, ff=3072)
    width = text.config.d_model
    transformer = StableAudioDiTModel(
        sample_size=1024, in_channels=64, out_channels=64, num_layers=_pick(tiny, 2, 24),
        attention_head_dim=_pick(tiny, 8, 64), num_attention_heads=_pick(tiny, 4, 24),
        num_key_value_attention_heads=_pick(tiny, 2, 12), cross_attention_dim=_pick(tiny, 32, 768),
        time_proj_dim=_pick(tiny, 16, 256), global_states_input_dim=_pick(tiny, 64, 1536),
        cross_attention_input_dim=width)
    vae = AutoencoderOobleck(encoder_hidden_size=_pick(tiny, 8, 128), decoder_channels=_pick(tiny, 8, 128),
                             decoder_input_channels=64, channel_multiples=_pick(tiny, [1, 2], [1, 2, 4, 8, 16]),
                             downsampling_ratios=_pick(tiny, [4, 8], [2, 4, 4, 8, 8]), audio_channels=2,
                             sampling_rate=_pick(tiny, 16000, 44100))
    projection = StableAudioProjectionModel(text_encoder_dim=width, conditioning_dim=_pick(tiny, 32, 768),
                                            min_value=0, max_value=512)
    scheduler = EDMDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500, sigma_data=1.0, final_sigmas_type="zero")
    return StableAudioPipeline(vae=vae, text_encoder=text, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=scheduler)


def build_speech_decoder(tiny: bool) -> DenoiserOnly:
    """The speech mel decoder at an F5-TTS-base-like size (16 blocks, width 1024: 341 M
    parameters; F5-TTS base has 336 M), mel plus aligned condition in, 64 mel bins out, on 10 s of
    speech (860 mel frames). No diffusers pipeline exists for it, so only the denoiser is measured."""
    from diffusers import StableAudioDiTModel

    width = _pick(tiny, 32, 1024)
    frames = _pick(tiny, 16, 860)
    model = StableAudioDiTModel(
        sample_size=frames, in_channels=128, out_channels=64, num_layers=_pick(tiny, 2, 16),
        attention_head_dim=_pick(tiny, 8, 64), num_attention_heads=_pick(tiny, 4, 16),
        num_key_value_attention_heads=_pick(tiny, 4, 16), cross_attention_dim=width, time_proj_dim=_pick(tiny, 16, 256),
        global_states_input_dim=width, cross_attention_input_dim=_pick(tiny, 32, 512))

    def inputs(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(0)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen).to(device, dtype)

        return {"hidden_states": rand(2, 128, frames), "timestep": torch.tensor([0.5, 0.5], device=device),
                "encoder_hidden_states": rand(2, 8, model.config.cross_attention_input_dim),
                "global_hidden_states": rand(2, 1, width), "rotary_embedding": None}

    return DenoiserOnly(model.eval(), inputs)


ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("sd15", Family.SD_UNET, "Stable Diffusion 1.5", build_sd15, {"height": 512, "width": 512},
         {"height": 32, "width": 32}, 50, 7.5, "512x512 image"),
    Arch("sdxl", Family.SDXL_UNET, "Stable Diffusion XL base 1.0", build_sdxl, {"height": 1024, "width": 1024},
         {"height": 32, "width": 32}, 50, 5.0, "1024x1024 image"),
    Arch("pixart", Family.IMAGE_DIT, "PixArt-α 512", build_pixart,
         {"height": 512, "width": 512, "clean_caption": False},
         {"height": 32, "width": 32, "use_resolution_binning": False, "clean_caption": False}, 20, 4.5,
         "512x512 image"),
    Arch("wan", Family.VIDEO_DIT, "Wan 2.1 T2V 1.3B", build_wan, {"height": 480, "width": 832, "num_frames": 33},
         {"height": 32, "width": 32, "num_frames": 5}, 50, 5.0, "480x832, 33-frame clip"),
    Arch("stable-audio", Family.AUDIO_DIT, "Stable Audio Open 1.0", build_stable_audio, {"audio_end_in_s": 47.0},
         {"audio_end_in_s": 0.1}, 100, 7.0, "47 s stereo at 44.1 kHz"),
    Arch("speech-decoder", Family.SPEECH_DIT, "F5-TTS base size (mel decoder)", build_speech_decoder, {}, {}, 32, 2.0,
         "10 s of mel frames"),
)}
