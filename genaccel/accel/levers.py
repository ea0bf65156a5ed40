"""General levers that change no model maths: memory layout, VAE tiling/slicing, the attention
backend and regional ``torch.compile``. Each applies to the pipeline instance and is undone by
``remove()``; where a lever is unavailable (no CUDA, no xformers, no C compiler) it logs a
warning and changes nothing, so a profile that asks for it still runs everywhere."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genaccel.accel.base import Undo, technique

log = logging.getLogger(__name__)
ALL_FAMILIES = ("sd-unet", "sdxl-unet", "video-unet", "image-dit", "video-dit", "audio-dit", "other")
CUDA_ONLY = {"xformers", "flash", "flash_varlen", "sage", "_native_flash", "_native_efficient", "_native_cudnn"}
BACKENDS = ("native", "_native_math", "flex", *sorted(CUDA_ONLY))


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


@dataclass(frozen=True)
class ChannelsLast:
    """Denoiser and VAE in channels-last memory format (faster convolutions on most GPUs)."""

    name: ClassVar[str] = "channels_last"
    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[str, str]] = {}


@technique(ChannelsLast)
def apply_channels_last(pipe: Any, config: ChannelsLast) -> Undo:
    modules = [m for m in (_denoiser(pipe), getattr(pipe, "vae", None)) if isinstance(m, torch.nn.Module)]
    for m in modules:
        m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def undo() -> None:
        for m in modules:
            m.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

    return Undo(undo)


@dataclass(frozen=True)
class VAETiling:
    """Decode (and encode) in tiles and one image at a time: large images fit in less memory."""

    name: ClassVar[str] = "vae_tiling"
    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[str, str]] = {}


@technique(VAETiling)
def apply_vae_tiling(pipe: Any, config: VAETiling) -> Undo:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        log.warning("vae_tiling: %s has no VAE that tiles; nothing changed", type(pipe).__name__)
        return Undo()
    was_tiling, was_slicing = bool(getattr(vae, "use_tiling", False)), bool(getattr(vae, "use_slicing", False))
    vae.enable_tiling()
    if hasattr(vae, "enable_slicing"):
        vae.enable_slicing()

    def undo() -> None:
        if not was_tiling:
            vae.disable_tiling()
        if not was_slicing and hasattr(vae, "disable_slicing"):
            vae.disable_slicing()

    return Undo(undo)


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
def apply_attention_backend(pipe: Any, config: AttentionBackend) -> Undo:
    denoiser = _denoiser(pipe)
    why = backend_unavailable(config.backend)
    if why or denoiser is None or not hasattr(denoiser, "set_attention_backend"):
        log.warning("attention backend %s %s; keeping the default", config.backend,
                    why or f"is not settable on {type(pipe).__name__}")
        return Undo()
    denoiser.set_attention_backend(config.backend)
    return Undo(denoiser.reset_attention_backend)


DEFAULT_REGIONS = ("BasicTransformerBlock", "ResnetBlock2D")
"""Repeated block classes compiled when the denoiser names none (``_repeated_blocks``)."""


@dataclass(frozen=True)
class RegionalCompile:
    """Regional ``torch.compile`` (the PyTorch recipe diffusers' ``compile_repeated_blocks``
    follows): each repeated block of the denoiser is compiled, not the whole model, so compile
    time stays short and one compiled graph serves every block of a shape. The first jobs after
    it pay the compile time; later ones run the compiled code.

    Args:
        backend: a ``torch.compile`` backend (``inductor``; ``eager``/``aot_eager`` for debugging).
        mode: inductor mode (``default``, ``reduce-overhead``, ``max-autotune``).
        dynamic: compile for dynamic shapes (fewer recompiles across sizes and batch sizes).
    """

    backend: str = "inductor"
    mode: str = "default"
    dynamic: bool = False
    name: ClassVar[str] = "compile"
    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        if self.mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"mode={self.mode!r} must be default, reduce-overhead or max-autotune")
        if self.backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise ValueError(f"backend={self.backend!r} must be one of {', '.join(torch._dynamo.list_backends())}")


def compile_unavailable(config: RegionalCompile, device: torch.device) -> str | None:
    """Why ``config`` cannot compile here, or None."""
    import shutil

    if config.backend == "inductor" and device.type == "cpu" and not (shutil.which("cc") or shutil.which("gcc")):
        return "inductor on CPU needs a C compiler (cc/gcc) and none is installed"
    return None


@technique(RegionalCompile)
def apply_compile(pipe: Any, config: RegionalCompile) -> Undo:
    denoiser = _denoiser(pipe)
    if not isinstance(denoiser, torch.nn.Module):
        log.warning("compile: %s has no denoiser module; nothing compiled", type(pipe).__name__)
        return Undo()
    device = next(denoiser.parameters()).device
    reason = compile_unavailable(config, device)
    if reason:
        log.warning("compile: %s; running uncompiled", reason)
        return Undo()
    regions = tuple(getattr(denoiser, "_repeated_blocks", None) or DEFAULT_REGIONS)
    blocks = [m for m in denoiser.modules() if type(m).__name__ in regions]
    if not blocks:
        log.warning("compile: no %s blocks in %s; running uncompiled", "/".join(regions), type(denoiser).__name__)
        return Undo()
    options = {"backend": config.backend, "dynamic": config.dynamic}
    if config.backend == "inductor":
        options["mode"] = config.mode
    for block in blocks:
        block.compile(**options)

    def undo() -> None:
        for block in blocks:
            block._compiled_call_impl = None  # what nn.Module.compile set: the plain forward again

    return Undo(undo)
