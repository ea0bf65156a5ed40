"""General levers that change no model maths: memory layout, VAE tiling/slicing, the attention
backend and regional ``torch.compile``. Each applies to the pipeline instance and is undone by
``remove()``; where a lever is unavailable (no CUDA, no xformers, no C compiler) it logs a
warning and changes nothing, so a profile that asks for it still runs everywhere."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patched, patching
from genaccel.families import ALL_FAMILIES, Family

log = logging.getLogger(__name__)
CUDA_ONLY = {"xformers", "flash", "flash_varlen", "sage", "_native_flash", "_native_efficient", "_native_cudnn"}
BACKENDS = ("native", "_native_math", "flex", *sorted(CUDA_ONLY))


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


@dataclass(frozen=True)
class ChannelsLast:
    """Denoiser and VAE in channels-last memory format (faster convolutions on most GPUs)."""

    name: ClassVar[str] = "channels_last"
    families: ClassVar[tuple[Family, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = {}


@technique(ChannelsLast)
def apply_channels_last(pipe: Any, config: ChannelsLast) -> Patched:
    modules = [m for m in (_denoiser(pipe), getattr(pipe, "vae", None)) if isinstance(m, torch.nn.Module)]
    with patching(pipe, config) as patches:
        for m in modules:
            patches.on_undo(f"{type(m).__name__} back to contiguous", _contiguous(m))
            m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return Patched(patches)


def _contiguous(module: torch.nn.Module) -> Callable[[], None]:
    def undo() -> None:
        module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return undo


@dataclass(frozen=True)
class VAETiling:
    """Decode (and encode) in tiles and one image at a time: large images fit in less memory."""

    name: ClassVar[str] = "vae_tiling"
    families: ClassVar[tuple[Family, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = {}


@technique(VAETiling)
def apply_vae_tiling(pipe: Any, config: VAETiling) -> Patched:
    vae = getattr(pipe, "vae", None)
    with patching(pipe, config) as patches:
        if vae is None or not hasattr(vae, "enable_tiling"):
            log.warning("vae_tiling: %s has no VAE that tiles; nothing changed", type(pipe).__name__)
            return Patched(patches)
        if not getattr(vae, "use_tiling", False):
            patches.on_undo("VAE tiling", vae.disable_tiling)
            vae.enable_tiling()
        if hasattr(vae, "enable_slicing") and not getattr(vae, "use_slicing", False):
            patches.on_undo("VAE slicing", vae.disable_slicing)
            vae.enable_slicing()
    return Patched(patches)


@dataclass(frozen=True)
class AttentionBackend:
    """Args:
        backend: a diffusers attention backend (``native`` = PyTorch SDPA, ``xformers``, ``flash``,
            ``sage``, ...). CUDA-only backends on a machine without CUDA, or without their package,
            log a warning and leave the default.
    """

    backend: str = "native"
    name: ClassVar[str] = "attention"
    families: ClassVar[tuple[Family, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = {}

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
def apply_attention_backend(pipe: Any, config: AttentionBackend) -> Patched:
    denoiser = _denoiser(pipe)
    why = backend_unavailable(config.backend)
    with patching(pipe, config) as patches:
        if why or denoiser is None or not hasattr(denoiser, "set_attention_backend"):
            log.warning("attention backend %s %s; keeping the default", config.backend,
                        why or f"is not settable on {type(pipe).__name__}")
            return Patched(patches)
        patches.on_undo("the attention backend", denoiser.reset_attention_backend)
        denoiser.set_attention_backend(config.backend)
    return Patched(patches)


def _restore_call(block: torch.nn.Module) -> Callable[[], None]:
    """Undo ``block.compile()``: its ``_compiled_call_impl`` as before (``None``: the plain forward)."""
    prior = block._compiled_call_impl

    def undo() -> None:
        block._compiled_call_impl = prior
    return undo


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
    families: ClassVar[tuple[Family, ...]] = ALL_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = {}

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
def apply_compile(pipe: Any, config: RegionalCompile) -> Patched:
    denoiser = _denoiser(pipe)
    with patching(pipe, config) as patches:
        if not isinstance(denoiser, torch.nn.Module):
            log.warning("compile: %s has no denoiser module; nothing compiled", type(pipe).__name__)
            return Patched(patches)
        device = next(denoiser.parameters()).device
        reason = compile_unavailable(config, device)
        if reason:
            log.warning("compile: %s; running uncompiled", reason)
            return Patched(patches)
        regions = tuple(getattr(denoiser, "_repeated_blocks", None) or DEFAULT_REGIONS)
        blocks = [m for m in denoiser.modules() if type(m).__name__ in regions]
        if not blocks:
            log.warning("compile: no %s blocks in %s; running uncompiled", "/".join(regions),
                        type(denoiser).__name__)
            return Patched(patches)
        options = {"backend": config.backend, "dynamic": config.dynamic}
        if config.backend == "inductor":
            options["mode"] = config.mode
        for block in blocks:
            patches.on_undo(f"compiled {type(block).__name__}", _restore_call(block))
            block.compile(**options)
    return Patched(patches)
