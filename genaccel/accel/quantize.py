"""Weight quantisation of the denoiser: int8 weight-only, dynamic int8, fp8 weight-only.

Symmetric per-output-channel absmax quantisation (LLM.int8() without outliers, Dettmers et al. 2022,
arXiv:2208.07339; weight-only as in torchao's ``Int8WeightOnlyConfig``). Each ``nn.Linear`` (and, with
``modules="linear+conv"``, each ``nn.Conv2d``) of the denoiser whose weight has at least
``min_params`` elements is swapped for a module that stores the weight as int8 (or fp8) plus one
fp32 scale per output channel:

* ``int8_weight``: dequantise the weight on the fly to the activations' dtype, one layer at a time,
  then an ordinary float matmul/conv. Weight memory 1/4 of fp32 (1/2 of fp16) plus the scales.
* ``int8_dynamic``: as above for convolutions; Linear layers also quantise their input per token
  at every call (absmax over the last dim) and multiply int8 x int8 with int32 accumulation
  (``torch._int_mm``), then rescale. CPU-oriented; no float weight is ever materialised.
* ``fp8``: float8_e4m3fn weight storage (absmax scaled to 448), dequantised on the fly. Only on a
  CUDA device of compute capability 8.9 or newer; anywhere else it logs one warning and runs
  ``int8_weight`` instead (STYLE 14: a request that asks for fp8 still runs everywhere, and the
  job's log says what it got).

Why our own rather than torchao: torchao 0.18 (the release on PyPI for torch 2.13) installs on this
CPU build but fails to load its compiled extensions (``_C_mxfp8``, ``_C_cutlass_90a``) and quantises
weights in place into tensor subclasses, which leaves nothing to restore exactly from; PyTorch's own
``torch.ao.nn.quantized.dynamic.Linear`` works but its quantized-tensor dtypes are deprecated for
removal. The weight-only scheme is a few lines of plain tensor code, keeps the swap explicit, and
``remove()`` puts the very same module objects back.

Memory and exact removal (the honest trade-off). A cached pipeline must come back bit for bit, so
the float weights of the swapped layers have to be kept somewhere; keeping them where the
denoiser runs would defeat the point. While the technique is on, each original layer is detached
from the denoiser and its weight tensor is *stashed*:

* ``stash="auto"`` (default): to host memory when the denoiser is on an accelerator (device memory
  drops; host memory holds the float copy), to a temporary file when it is on the CPU (resident
  memory drops; apply writes and remove reads the float weights, once per job);
* ``stash="memory"``: always host memory (on a CPU denoiser this saves no resident memory at all);
* ``stash="disk"``: always a temporary file (``TMPDIR``).

Applying briefly holds float and quantised weights together (one extra quarter of the weights).
Biases stay float and are shared with the original layer, not copied.

Example:
    >>> techniques = apply_techniques(pipe, [QuantizeConfig(mode="int8_weight")])
    >>> image = pipe("a red circle").images[0]
    >>> techniques.remove()  # the float layers are back, outputs equal the unquantised ones
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patched, Patches, patching
from genaccel.families import ALL_FAMILIES, Family

log = logging.getLogger(__name__)
Mode = Literal["int8_weight", "int8_dynamic", "fp8"]
MODES = ("int8_weight", "int8_dynamic", "fp8")
MODULES = ("linear", "linear+conv")
STASHES = ("auto", "memory", "disk")
FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448


@dataclass(frozen=True)
class QuantizeConfig:
    """Quantise the denoiser's weights for the job; ``remove()`` restores the float layers exactly.

    Args:
        mode: ``int8_weight`` (weight-only int8), ``int8_dynamic`` (int8 weights and per-call int8
            activations for Linear layers; CPU) or ``fp8`` (float8 e4m3 weights; CUDA with compute
            capability >= 8.9, otherwise ``int8_weight`` with a warning).
        modules: ``linear`` or ``linear+conv`` (convolutions weight-only in every mode).
        min_params: layers with fewer weight elements stay float (tiny layers save nothing and
            lose the most).
        stash: where the float weights wait during the job: ``auto``, ``memory`` or ``disk`` (see
            the module docstring).
    """

    mode: Mode = "int8_weight"
    modules: Literal["linear", "linear+conv"] = "linear"
    min_params: int = 1024
    stash: Literal["auto", "memory", "disk"] = "auto"
    name: ClassVar[str] = "quantize"
    families: ClassVar[tuple[Family, ...]] = tuple(f for f in ALL_FAMILIES if f != Family.OTHER)
    alternatives: ClassVar[dict[Family, str]] = {
        Family.OTHER: "this model has no denoiser whose Linear layers quantize knows; run it without quantize"}

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} must be one of {', '.join(MODES)}")
        if self.modules not in MODULES:
            raise ValueError(f"modules={self.modules!r} must be linear or linear+conv")
        if self.stash not in STASHES:
            raise ValueError(f"stash={self.stash!r} must be one of {', '.join(STASHES)}")
        if not isinstance(self.min_params, int) or isinstance(self.min_params, bool) or self.min_params < 0:
            raise ValueError(f"min_params={self.min_params!r} must be an integer >= 0")


def fp8_unavailable(device: torch.device) -> str | None:
    """Why fp8 weights cannot run on ``device``, or ``None``."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"needs a CUDA device of compute capability 8.9 or newer (the denoiser is on {device.type})"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"needs compute capability 8.9 or newer ({torch.cuda.get_device_name(device)} has {major}.{minor})"
    return None


@torch.no_grad()
def quantize_weight(weight: torch.Tensor, storage: torch.dtype = torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantisation of ``weight`` (O, ...) to ``storage``.

    Returns:
        ``(q, scale)``: ``q`` the weight's shape in ``storage``, ``scale`` (O,) fp32 with
        ``weight ~= q * scale`` along dim 0.
    """
    w = weight.detach().float().reshape(weight.shape[0], -1)  # (O, K)
    top = 127.0 if storage == torch.int8 else FP8_MAX
    scale = (w.abs().amax(dim=1) / top).clamp(min=1e-12)  # (O,)
    scaled = w / scale[:, None]
    q = scaled.round().clamp(-127, 127).to(torch.int8) if storage == torch.int8 else scaled.to(storage)
    return q.reshape(weight.shape), scale


class _Quantized(torch.nn.Module):
    qweight: torch.Tensor
    scale: torch.Tensor
    bias: torch.nn.Parameter | None

    def __init__(self, original: torch.nn.Module, storage: torch.dtype) -> None:
        super().__init__()
        q, scale = quantize_weight(original.weight, storage)  # type: ignore[arg-type]
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = cast("torch.nn.Parameter | None", original.bias)  # shared, not a copy
        self.out_features = q.shape[0]

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The float weight, (O, ...) in ``dtype`` (one layer's worth, transient)."""
        shape = (-1,) + (1,) * (self.qweight.dim() - 1)
        return self.qweight.to(dtype) * self.scale.view(shape).to(dtype)


class QuantLinear(_Quantized):
    """``nn.Linear`` with an int8/fp8 weight (O, I) and an fp32 scale per output feature.

    Args:
        original: the float layer (its weight is read, its bias shared).
        storage: ``torch.int8`` or ``torch.float8_e4m3fn``.
        dynamic: also quantise the input per token and multiply in int8 (int32 accumulation).
    """

    def __init__(self, original: torch.nn.Linear, storage: torch.dtype = torch.int8, dynamic: bool = False) -> None:
        super().__init__(original, storage)
        self.in_features, self.dynamic = original.in_features, dynamic and storage == torch.int8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dynamic:
            return F.linear(x, self.dequantized(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        rows = x.reshape(-1, x.shape[-1]).float()  # (M, I)
        sx = (rows.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (M,)
        xq = (rows / sx[:, None]).round().clamp(-127, 127).to(torch.int8)
        try:
            acc = torch._int_mm(xq, self.qweight.t())  # (M, O) int32
        except RuntimeError:  # shape limits of the CUDA kernel (M > 16, multiples of 8): exact in fp32 below 2**24
            acc = xq.float() @ self.qweight.t().float()
        out = acc.float() * sx[:, None] * self.scale[None, :]
        if self.bias is not None:
            out = out + self.bias.float()
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class QuantConv2d(_Quantized):
    """``nn.Conv2d`` (zero padding) with an int8/fp8 weight (O, I/g, kh, kw), dequantised per call."""

    def __init__(self, original: torch.nn.Conv2d, storage: torch.dtype = torch.int8) -> None:
        super().__init__(original, storage)
        self.stride, self.padding = original.stride, original.padding
        self.dilation, self.groups = original.dilation, original.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, self.dequantized(x.dtype), bias, self.stride, self.padding,  # type: ignore[arg-type]
                        self.dilation, self.groups)


def _denoiser(pipe: Any) -> torch.nn.Module | None:
    found = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    return found if isinstance(found, torch.nn.Module) else None


def targets(denoiser: torch.nn.Module, config: QuantizeConfig) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """``(parent, attribute, layer)`` for every layer ``config`` quantises: plain ``nn.Linear``
    (and zero-padded ``nn.Conv2d``) of at least ``min_params`` weight elements, carrying no hook."""
    kinds: tuple[type, ...] = (torch.nn.Linear,) if config.modules == "linear" else (torch.nn.Linear, torch.nn.Conv2d)
    found = []
    for parent in denoiser.modules():
        for attr, layer in parent.named_children():
            if type(layer) not in kinds or cast(torch.Tensor, layer.weight).numel() < config.min_params:
                continue
            if isinstance(layer, torch.nn.Conv2d) and layer.padding_mode != "zeros":
                continue
            if (hasattr(layer, "_diffusers_hook") or "forward" in layer.__dict__ or layer._forward_hooks
                    or layer._forward_pre_hooks or not cast(torch.Tensor, layer.weight).is_floating_point()):
                continue  # another technique owns this layer
            found.append((parent, attr, layer))
    return found


def _swap_back(parent: torch.nn.Module, attr: str, layer: torch.nn.Module) -> Any:
    def undo() -> None:
        setattr(parent, attr, layer)
    return undo


def _stash(patches: Patches, layers: list[torch.nn.Module], where: str) -> None:
    """Move the layers' float weights out of the denoiser's memory; record how to bring them back."""
    weights = [cast(torch.nn.Parameter, layer.weight) for layer in layers]
    homes = [w.data for w in weights]
    if where == "memory":
        kept = [h.to("cpu", copy=True) if h.device.type != "cpu" else h for h in homes]

        def restore() -> None:
            for w, k, h in zip(weights, kept, homes, strict=True):
                w.data = k.to(h.device)
    else:
        folder = Path(tempfile.mkdtemp(prefix="genaccel-quantize-"))
        patches.on_undo("the quantize stash folder", lambda: shutil.rmtree(folder, ignore_errors=True))
        path = folder / "weights.pt"
        torch.save([h.cpu() for h in homes], path)
        devices = [h.device for h in homes]
        del homes

        def restore() -> None:
            loaded = torch.load(path, weights_only=True)
            for w, k, d in zip(weights, loaded, devices, strict=True):
                w.data = k.to(d)
    patches.on_undo("the stashed float weights", restore)
    for w in weights:
        w.data = torch.empty(0, dtype=w.dtype, device=w.device)


@technique(QuantizeConfig)
def apply_quantize(pipe: Any, config: QuantizeConfig) -> Patched:
    denoiser = _denoiser(pipe)
    with patching(pipe, config) as patches:
        if denoiser is None:
            log.warning("quantize: %s has no denoiser module; nothing quantised", type(pipe).__name__)
            return Patched(patches)
        device = next(denoiser.parameters()).device
        mode = config.mode
        if mode == "fp8" and (why := fp8_unavailable(device)):
            log.warning("quantize: fp8 %s; quantising to int8_weight instead", why)
            mode = "int8_weight"
        storage = FP8 if mode == "fp8" else torch.int8
        found = targets(denoiser, config)
        if not found:
            log.warning("quantize: no layer of %s has %d weights or more; nothing quantised",
                        type(denoiser).__name__, config.min_params)
            return Patched(patches)
        swaps = [(parent, attr, layer,
                  QuantLinear(layer, storage, dynamic=mode == "int8_dynamic") if isinstance(layer, torch.nn.Linear)
                  else QuantConv2d(layer, storage))  # type: ignore[arg-type]
                 for parent, attr, layer in found]
        stash = config.stash if config.stash != "auto" else ("disk" if device.type == "cpu" else "memory")
        _stash(patches, [layer for _, _, layer, _ in swaps], stash)
        for parent, attr, layer, quantized in swaps:
            patches.on_undo(f"{type(layer).__name__} {attr}", _swap_back(parent, attr, layer))
            setattr(parent, attr, quantized)
    return Patched(patches)


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers (what stays resident for its weights)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
