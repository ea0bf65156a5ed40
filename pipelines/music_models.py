"""The music models genaccel ships: ``tiny-stable-audio`` (built from a config, random weights)
and ``music-ref`` (the mel DiT trained here, in ``assets/music-ref``), registered by
``pipelines.registry.builtin_models``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from genaccel.families import Family
from pipelines.registry import ModelDefaults, ModelInfo, Source

MUSIC_REF_DEFAULTS = ModelDefaults(steps=25, guidance_scale=3.0, width=0, height=0, duration_s=4.0,
                                   max_duration_s=60.0, sample_rate=16_000, channels=1, output_format="wav")


def load_music_ref(path: Path) -> Any:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from pipelines.mel_dit import MelDiTPipeline

    diffusers_logging.disable_progress_bar()  # job progress is ours; no loader bars in logs
    transformers_logging.disable_progress_bar()
    return MelDiTPipeline.from_pretrained(path, use_safetensors=True, local_files_only=True)


def mel_dit_info(name: str, path: Path, source: Source, description: str = "") -> ModelInfo:
    """A ``MelDiTPipeline`` folder as a served music model: ``music-ref``'s defaults, overridden by
    the folder's ``genaccel.json`` (a consistency student's steps and guidance)."""
    from pipelines.registry import model_card

    card = model_card(path)
    given = {k: v for k, v in card.get("defaults", {}).items() if v is not None}
    defaults = ModelDefaults(**{**vars(MUSIC_REF_DEFAULTS), **given})
    if not description and card.get("distilled_from"):
        description = f"{card.get('mode', 'distilled')} student of {card['distilled_from']} ({defaults.steps} steps)"
    return ModelInfo(name, "music", Family.AUDIO_DIT, source, str(path), "MelDiTPipeline", defaults,
                     description or f"MelDiTPipeline from {path}", partial(load_music_ref, path))


def music_models(assets: Path) -> dict[str, ModelInfo]:
    from pipelines.tiny_audio import TINY_SAMPLE_RATE, TINY_WINDOW_S, build_tiny_audioldm2, build_tiny_stable_audio

    found: dict[str, ModelInfo] = {}
    path = assets / "music-ref"
    if (path / "model_index.json").is_file():  # first: the default music model when present
        found["music-ref"] = mel_dit_info(
            "music-ref", path, "asset", "reference music model: Stable Audio's DiT on log-mel frames of "
            "synthesised melodies (Griffin-Lim codec)")
    found |= {
        "tiny-stable-audio": ModelInfo(
            "tiny-stable-audio", "music", Family.AUDIO_DIT, "builtin", "tiny-stable-audio", "StableAudioPipeline",
            ModelDefaults(steps=8, guidance_scale=3.0, width=0, height=0, duration_s=TINY_WINDOW_S,
                          max_duration_s=30.0, sample_rate=TINY_SAMPLE_RATE, channels=1, output_format="wav"),
            "tiny random-weight Stable-Audio-architecture pipeline, EDM DPM-Solver (tests, smoke runs)",
            build_tiny_stable_audio,
        ),
        "tiny-audioldm2": ModelInfo(
            "tiny-audioldm2", "music", Family.OTHER, "builtin", "tiny-audioldm2", "AudioLDM2Pipeline",
            ModelDefaults(steps=10, guidance_scale=3.5, width=0, height=0, duration_s=1.0, max_duration_s=20.0,
                          sample_rate=TINY_SAMPLE_RATE, channels=1, output_format="wav"),
            "tiny random-weight AudioLDM-2-architecture pipeline (UNet, CLAP + T5 + GPT-2, HiFi-GAN; tests)",
            build_tiny_audioldm2,
        ),
    }
    return found
