"""``lora``: LoRA adapters (LCM-LoRA, TCD, Hyper-SD, PCM, style LoRAs) on the served pipeline,
loaded through diffusers/peft and hot-swapped between jobs without reloading the base model.

An adapter is loaded into a pipeline once and kept (up to ``MAX_LOADED`` per pipeline, least
recently used deleted first); a job activates the adapters it names at their scales, and
``remove()`` deactivates them, so the next job sees the base model exactly (peft's LoRA layers
return the base layer's output when disabled). With ``fuse`` the weights are merged for the
job (faster on GPU) and unmerged after it (equal to the base within float rounding).

Requests name adapters, never paths: ``adapter`` is looked up in ``GENACCEL_HOME/loras`` and
``GENACCEL_LORA_DIRS`` (a ``NAME/`` folder with ``*.safetensors`` or a ``NAME.safetensors``
file). Which denoiser a LoRA patches (UNet or transformer) is read from its tensor names, so a
UNet LoRA asked for on a DiT is refused before the job is queued.

Video: AnimateDiff takes UNet LoRAs (AnimateLCM's, with ``solver kind=lcm``); Wan takes
transformer LoRAs in diffusers' layout or in the original Wan layout that CausVid/LightX2V-style
few-step LoRAs are published in (``diffusion_model.blocks.N.self_attn.q...``, which diffusers'
Wan loader converts), with ``solver kind=euler spacing=trailing`` as their few-step sampler and
guidance 1. Pipelines without a LoRA loader (Latte, for one) are refused before queueing.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patched, patching
from genaccel.accel.rules import RequestContext, checks
from genaccel.errors import InvalidRequest
from genaccel.families import UNETS, Family
from genaccel.settings import Settings

MAX_LOADED = 8
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class LoRAConfig:
    """Args:
        adapter: name of a LoRA in GENACCEL_HOME/loras or GENACCEL_LORA_DIRS.
        scale: strength (1.0 = as trained).
        fuse: merge into the weights for the job (unmerged after it).
    """

    adapter: str
    scale: float = 1.0
    fuse: bool = False
    name: ClassVar[str] = "lora"
    families: ClassVar[tuple[Family, ...]] = (*UNETS, Family.VIDEO_UNET, Family.IMAGE_DIT, Family.VIDEO_DIT)
    alternatives: ClassVar[dict[Family, str]] = {}

    def __post_init__(self) -> None:
        if not NAME.match(self.adapter) or ".." in self.adapter:
            raise ValueError(f"adapter={self.adapter!r} must be a name (letters, digits, _ . -), not a path")
        if not -4.0 <= self.scale <= 4.0:
            raise ValueError(f"scale={self.scale} must be between -4 and 4")

    @property
    def label(self) -> str:
        """One request may use several adapters, each once: ``lora:NAME`` tells them apart."""
        return f"lora:{self.adapter}"


def lora_dirs(settings: Settings) -> list[Path]:
    return [settings.home / "loras", *settings.lora_dirs]


def resolve_lora(adapter: str, settings: Settings | None = None) -> Path:
    """The safetensors file of ``adapter``; ``InvalidRequest`` naming where it was looked for."""
    settings = settings or Settings()
    for root in lora_dirs(settings):
        folder, single = root / adapter, root / f"{adapter}.safetensors"
        if single.is_file():
            return single
        if folder.is_dir():
            files = sorted(folder.glob("*.safetensors"))
            if files:
                return files[0]
    where = ", ".join(str(d) for d in lora_dirs(settings))
    raise InvalidRequest("techniques.lora", adapter, f"no such LoRA in {where}",
                         "put NAME.safetensors (or a NAME/ folder) there, or set GENACCEL_LORA_DIRS")


def lora_families(path: Path) -> tuple[Family, ...]:
    """Denoiser families a LoRA file patches, from its tensor names (no tensors are read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    if any(k.startswith(("unet.", "lora_unet_")) for k in keys):
        return (*UNETS, Family.VIDEO_UNET)  # AnimateDiff's UNet is the image UNet plus motion modules
    if any(k.startswith(("diffusion_model.blocks.", "transformer.blocks.")) for k in keys):
        return (Family.VIDEO_DIT,)  # Wan's layout (original or diffusers'): its blocks are ``blocks.N``
    if any(k.startswith(("transformer.", "lora_transformer_")) for k in keys):
        return (Family.IMAGE_DIT, Family.VIDEO_DIT)
    return ()


@checks(LoRAConfig)
def check_lora_request(config: LoRAConfig, context: RequestContext) -> None:
    import diffusers

    if context.family is not None:
        check_lora(config, context.family, context.settings or Settings())
    cls = getattr(diffusers, context.pipeline_class or "", None)
    if isinstance(cls, type) and not hasattr(cls, "load_lora_weights"):
        raise _no_loader(cls.__name__)


def _no_loader(pipeline: str) -> InvalidRequest:
    return InvalidRequest("techniques", "lora", f"{pipeline} cannot load LoRA adapters",
                          "use a Stable Diffusion, SDXL, SD3, Flux, SANA, AnimateDiff, Wan or LTX model")


def check_lora(config: LoRAConfig, family: str, settings: Settings) -> None:
    """Refuse a LoRA that is missing or made for another denoiser family (at submit time)."""
    fits = lora_families(resolve_lora(config.adapter, settings))
    if family not in fits:
        made_for = ", ".join(fits) or "no denoiser this server knows"
        raise InvalidRequest("techniques", f"lora:{config.adapter}", f"is made for {made_for}, not the {family} "
                             "denoiser family", f"use a LoRA trained for a {family} model, or another model")


class _Adapters:
    """Per-pipeline bookkeeping: loaded adapters (LRU) and the active ones with their scales."""

    def __init__(self) -> None:
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter -> file
        self.active: dict[str, float] = {}

    @staticmethod
    def of(pipe: Any) -> _Adapters:
        found = pipe.__dict__.get("_genaccel_adapters")
        if found is None:
            found = pipe.__dict__["_genaccel_adapters"] = _Adapters()
        return found  # type: ignore[no-any-return]


def _adapter_name(adapter: str) -> str:
    return "ga_" + re.sub(r"[^A-Za-z0-9_]", "_", adapter)


def _activate(pipe: Any, book: _Adapters) -> None:
    if book.active:
        pipe.enable_lora()
        pipe.set_adapters(list(book.active), list(book.active.values()))
    elif book.loaded:
        pipe.disable_lora()


def _deactivate(pipe: Any, book: _Adapters, name: str) -> Callable[[], None]:
    def undo() -> None:
        book.active.pop(name, None)
        _activate(pipe, book)
    return undo


@technique(LoRAConfig)
def apply_lora(pipe: Any, config: LoRAConfig) -> Patched:
    """Activate adapter ``config.adapter`` at ``config.scale`` (loading it first if it is not loaded);
    ``remove()`` deactivates it and leaves it loaded for the next job that names it."""
    if not hasattr(pipe, "load_lora_weights"):
        raise _no_loader(type(pipe).__name__)
    path = resolve_lora(config.adapter)
    book = _Adapters.of(pipe)
    name = _adapter_name(config.adapter)
    with patching(pipe, config) as patches:
        if book.loaded.get(name) != str(path):
            if name in book.loaded:
                pipe.delete_adapters([name])
                del book.loaded[name]
            pipe.load_lora_weights(str(path), adapter_name=name)
            book.loaded[name] = str(path)
            while len(book.loaded) > MAX_LOADED:
                old = next(n for n in book.loaded if n not in book.active and n != name)
                pipe.delete_adapters([old])
                del book.loaded[old]
        book.loaded.move_to_end(name)
        patches.on_undo(f"adapter {config.adapter} active", _deactivate(pipe, book, name))
        book.active[name] = config.scale
        _activate(pipe, book)
        if config.fuse:
            patches.on_undo(f"adapter {config.adapter} fused", pipe.unfuse_lora)
            pipe.fuse_lora(adapter_names=[name], lora_scale=1.0)
    return Patched(patches)
