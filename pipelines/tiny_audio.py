"""Tiny offline audio pipelines built from configs (random weights, seeded): ``tiny-stable-audio``
exercises the whole music path (Stable Audio's DiT, Oobleck autoencoder, T5 and seconds
conditioning) without a download, ``tiny-audioldm2`` the AudioLDM 2 one (a UNet on a mel VAE,
CLAP + T5 + GPT-2 conditioning, HiFi-GAN vocoder). Their sound is noise; ``music-ref`` is the
trained model.

The scheduler is ``EDMDPMSolverMultistepScheduler``, not Stable Audio's default
``CosineDPMSolverMultistepScheduler``: the latter imports ``torchsde`` (an SDE solver package)
and this one needs nothing beyond diffusers, with the same EDM timestep convention.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioPipeline
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from transformers import T5Config, T5EncoderModel

from pipelines.mel_dit import edm_scheduler
from pipelines.tokenizers import char_t5_tokenizer

TINY_SAMPLE_RATE = 16_000
TINY_WINDOW_S = 4.0


def build_tiny_stable_audio(seed: int = 0) -> StableAudioPipeline:
    """Stable Audio architecture at 16 kHz mono: Oobleck with hop 256 (its encoder width must be
    twice the latent channels), a 2-layer DiT over 250 latent frames (a 4 s window)."""
    hop_ratios = [2, 4, 4, 8]
    latent_channels = 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(64)
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
        )).eval()
        projection = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=16, min_value=0,
                                                max_value=int(TINY_WINDOW_S))
        transformer = StableAudioDiTModel(
            sample_size=int(TINY_WINDOW_S * TINY_SAMPLE_RATE) // 256, in_channels=latent_channels, num_layers=2,
            attention_head_dim=16, num_attention_heads=2, num_key_value_attention_heads=1,
            out_channels=latent_channels, cross_attention_dim=32, time_proj_dim=16, global_states_input_dim=32,
            cross_attention_input_dim=16,
        )
        vae = AutoencoderOobleck(
            encoder_hidden_size=2 * latent_channels, downsampling_ratios=hop_ratios, channel_multiples=[1, 1, 2, 2],
            decoder_channels=8, decoder_input_channels=latent_channels, audio_channels=1,
            sampling_rate=TINY_SAMPLE_RATE,
        )
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection,
                               tokenizer=tokenizer, transformer=transformer, scheduler=edm_scheduler())


def build_tiny_audioldm2(seed: int = 0) -> Any:
    """AudioLDM 2 architecture at 16 kHz (CLAP text model, T5, GPT-2, projection, audio UNet, mel
    VAE, HiFi-GAN vocoder), every tokenizer in memory. Config sizes follow diffusers' own tests."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        RobertaTokenizer,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    from pipelines.tokenizers import _byte_vocab

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=(8, 16))
        vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                            norm_num_groups=8)
        tokenizer = RobertaTokenizer(vocab=_byte_vocab(["<s>", "<pad>", "</s>", "<unk>"]), merges=[],
                                     model_max_length=77)
        text = ClapTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=8, intermediate_size=37,
                              num_attention_heads=1, num_hidden_layers=1, pad_token_id=1,
                              vocab_size=len(tokenizer), projection_dim=8)
        audio = ClapAudioConfig(spec_size=8, window_size=4, num_mel_bins=8, intermediate_size=37, depths=[1, 1],
                                num_attention_heads=[1, 1], num_hidden_layers=1, hidden_size=192, projection_dim=8,
                                patch_size=2, patch_stride=2, patch_embed_input_channels=4)
        clap = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)).eval()
        tokenizer_2 = char_t5_tokenizer(77)
        t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=37, d_kv=8, num_heads=2,
                                     num_layers=2)).eval()
        language_model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=1000, n_ctx=99,
                                                    n_positions=99, bos_token_id=0, eos_token_id=1)).eval()
        language_model.config.max_new_tokens = 8
        projection = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=8, sampling_rate=TINY_SAMPLE_RATE, upsample_initial_channel=16, upsample_rates=[2, 2],
            upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False)).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    return AudioLDM2Pipeline(vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection,
                             language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                             feature_extractor=ClapFeatureExtractor(hop_length=7900), unet=unet, scheduler=scheduler,
                             vocoder=vocoder)
