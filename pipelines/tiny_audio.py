"""Tiny offline audio pipelines built from configs (random weights, seeded): ``tiny-stable-audio``
exercises the whole music path (Stable Audio's DiT, Oobleck autoencoder, T5 and seconds
conditioning) without a download. Its sound is noise; ``music-ref`` is the trained model.

The scheduler is ``EDMDPMSolverMultistepScheduler``, not Stable Audio's default
``CosineDPMSolverMultistepScheduler``: the latter imports ``torchsde`` (an SDE solver package)
and this one needs nothing beyond diffusers, with the same EDM timestep convention.
"""

from __future__ import annotations

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
