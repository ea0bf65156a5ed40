"""General levers that change no model maths: memory layout, VAE tiling/slicing and the
attention backend. Each applies to the pipeline instance and is undone by ``remove()``; where a
lever is unavailable (no CUDA, no xformers) it logs a warning and changes nothing, so a profile
that asks for it still runs everywhere."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genaccel.accel.base import technique

log = logging.getLogger(__name__)
ALL_FAMILIES = ("sd-unet", "sdxl-unet", "image-dit", "video-dit", "audio-dit", "other")
CUDA_ONLY = {"xformers", "flash", "flash_varlen", "sage", "_native_flash", "_native_efficient", "_native_cudnn"}
BACKENDS = ("native", "_native_math", "flex", *sorted(CUDA_ONLY))


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


class _Undo:
    def __init__(self, undo: Any = None) -> None:
        self.undo = undo

    def reset(self) -> None:
        pass

    def remove(self) -> None:
        if self.undo is not None:
            self.undo()
            self.undo = None


@dataclass(frozen=True)
class ChannelsLast:
    """Denoiser and VAE in channels-last memory format (faster convolutions on most GPUs)."""

    name: ClassVar[str] = "channels_last"
    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[str, str]] = {}


@technique(ChannelsLast)
def apply_channels_last(pipe: Any, config: ChannelsLast) -> _Undo:
    modules = [m for m in (_denoiser(pipe), getattr(pipe, "vae", None)) if isinstance(m, torch.nn.Module)]
    for m in modules:
        m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def undo() -> None:
        for m in modules:
            m.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

    return _Undo(undo)


@dataclass(frozen=True)
class VAETiling:
    """Decode (and encode) in tiles and one image at a time: large images fit in less memory."""

    name: ClassVar[str] = "vae_tiling"
    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[str, str]] = {}


@technique(VAETiling)
def apply_vae_tiling(pipe: Any, config: VAETiling) -> _Undo:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        log.warning("vae_tiling: %s has no VAE that tiles; nothing changed", type(pipe).__name__)
        return _Undo()
    was_tiling, was_slicing = bool(getattr(vae, "use_tiling", False)), bool(getattr(vae, "use_slicing", False))
    vae.enable_tiling()
    if hasattr(vae, "enable_slicing"):
        vae.enable_slicing()

    def undo() -> None:
        if not was_tiling:
            vae.disable_tiling()
        if not was_slicing and hasattr(vae, "disable_slicing"):
            vae.disable_slicing()

    return _Undo(undo)


@dataclass(frozen=True)
class AttentionBackend:
    """Args:
        backend: a diffusers attention backend (``native`` = PyTorch SDPA, ``xformers``, ``flash``,
            ``sage``, ...). CUDA-only backends on a machine without CUDA, or without their package,
            log a warning and leave the default.
    """

    backend: str = "native"
    name: ClassVar[str] = "attention"
    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} must be one of {', '.join(BACKENDS)}")


def backend_unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or ``None``."""
    import importlib.util

    if backend in CUDA_ONLY and not torch.cuda.is_available():
        return "needs CUDA"
    package = {"xformers": "xformers", "flash": "flash_attn", "flash_varlen": "flash_attn", "sage": "sageattention"}
    if backend in package and importlib.util.find_spec(package[backend]) is None:
        return f"needs the {package[backend]} package"
    return None


@technique(AttentionBackend)
def apply_attention_backend(pipe: Any, config: AttentionBackend) -> _Undo:
    denoiser = _denoiser(pipe)
    why = backend_unavailable(config.backend)
    if why or denoiser is None or not hasattr(denoiser, "set_attention_backend"):
        log.warning("attention backend %s %s; keeping the default", config.backend,
                    why or f"is not settable on {type(pipe).__name__}")
        return _Undo()
    denoiser.set_attention_backend(config.backend)
    return _Undo(denoiser.reset_attention_backend)
