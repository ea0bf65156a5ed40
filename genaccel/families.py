"""Denoiser families: the one typed set that profiles, techniques, the registry and the
adapters use to say which models a recipe or a technique fits.

A family is a ``StrEnum`` member, so it compares equal to its string (``Family.SD_UNET ==
"sd-unet"``), serialises as that string in JSON and metadata, and a misspelt family is an
``AttributeError`` at import time instead of a silent non-match.
"""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    """Which denoiser a model has; picks profile recipes and the techniques that fit."""

    SD_UNET = "sd-unet"
    """Stable Diffusion 1.x/2.x UNets (``UNet2DConditionModel``)."""
    SDXL_UNET = "sdxl-unet"
    """SDXL UNets (added text and time embeddings)."""
    VIDEO_UNET = "video-unet"
    """AnimateDiff ``UNetMotionModel``: an image UNet with motion modules."""
    IMAGE_DIT = "image-dit"
    """Image transformers: PixArt, SD3, Flux, SANA, DiT."""
    VIDEO_DIT = "video-dit"
    """Video transformers: Wan, LTX, Latte, CogVideoX."""
    AUDIO_DIT = "audio-dit"
    """Audio transformers: Stable Audio, genaccel's mel DiTs."""
    SPEECH_DIT = "speech-dit"
    """Text-to-speech flow-matching decoders: LongCat AudioDiT, genaccel's speech decoder."""
    OTHER = "other"
    """Anything without a denoiser the techniques know (single-pass models, test pipelines)."""


UNETS: tuple[Family, ...] = (Family.SD_UNET, Family.SDXL_UNET)
"""Image UNets."""
DITS: tuple[Family, ...] = (Family.IMAGE_DIT, Family.VIDEO_DIT, Family.AUDIO_DIT, Family.SPEECH_DIT)
"""Every transformer denoiser (the diffusers DiT caches fit all of them)."""
ALL_FAMILIES: tuple[Family, ...] = tuple(Family)


def family(value: str) -> Family:
    """The ``Family`` named ``value``; ``ValueError`` naming the known ones otherwise."""
    try:
        return Family(value)
    except ValueError:
        raise ValueError(f"unknown denoiser family {value!r}; known: {', '.join(ALL_FAMILIES)}") from None
