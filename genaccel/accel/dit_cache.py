"""DiT caches from diffusers, made to work in every DiT pipeline genaccel serves.

diffusers ships the caches (``diffusers.hooks``: first-block cache, Pyramid Attention Broadcast,
TaylorSeer); they are used as they are, not copied. What they need from a pipeline, and what
several pipelines (PixArt-α, PixArt-Σ, SANA) do not give them, is supplied here by one outer
hook on the transformer instance:

* a **cache context** around every denoiser call (diffusers' stateful hooks refuse to run
  without one; only some pipelines call ``transformer.cache_context``);
* the **current timestep** for the techniques that skip by timestep range (PAB), read from the
  call's ``timestep`` argument;
* **per-sample decisions** for the data-dependent first-block cache: its skip test compares
  residuals averaged over the whole batch, so a picture would depend on which other requests
  shared its batch. With ``per_sample`` (the default) each row of the batch runs under its own
  context, so each keeps its own residuals and decisions;
* a **reset** before every job (``Handle.reset``), so no state leaks between jobs;
* the **block metadata** of ``StableAudioDiTBlock`` (Stable Audio, genaccel's mel DiT), which
  diffusers does not register, so the first-block cache and MagCache can find its output;
* timesteps **mapped onto 0-1000** (1000 = pure noise) from the scheduler's own range, so the
  PAB and FasterCache windows (written in DDPM's 0-1000 timesteps) fire on every scheduler: EDM
  schedulers (Stable Audio) pass ``0.25 * log(sigma)``, about 1.1 down to -1.55, which a raw
  window never contains.

One request uses one of them (``exclusive``: they share the context hook). FasterCache assumes
batches of unconditional and conditional halves, so requests without classifier-free guidance are
refused with it before they are queued; so is MagCache for a model without calibrated ratios
(the ``@checks`` below).

Non-public diffusers names used here (pinned by ``tests/test_accel_dit_cache.py`` and the
``diffusers<0.43`` requirement): ``diffusers.hooks.hooks.CacheContext`` and
``_set_cache_context``, and the hook names each ``apply_*`` function registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.hooks.faster_cache import (
    _FASTER_CACHE_BLOCK_HOOK,
    _FASTER_CACHE_DENOISER_HOOK,
    FasterCacheConfig,
    apply_faster_cache,
)
from diffusers.hooks.first_block_cache import (
    _FBC_BLOCK_HOOK,
    _FBC_LEADER_BLOCK_HOOK,
    FirstBlockCacheConfig,
    apply_first_block_cache,
)
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.hooks.mag_cache import (
    _MAG_CACHE_BLOCK_HOOK,
    _MAG_CACHE_LEADER_BLOCK_HOOK,
    MagCacheConfig,
    apply_mag_cache,
    nearest_interp,
)
from diffusers.hooks.pyramid_attention_broadcast import (
    _PYRAMID_ATTENTION_BROADCAST_HOOK,
    PyramidAttentionBroadcastConfig,
    apply_pyramid_attention_broadcast,
)
from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK, TaylorSeerCacheConfig, apply_taylorseer_cache

from genaccel.accel.base import technique
from genaccel.accel.calibration import magcache_ratios, model_folder
from genaccel.accel.hooks import Patches, patching
from genaccel.accel.rules import RequestContext, checks, few_steps_warning, warns
from genaccel.errors import InvalidRequest
from genaccel.families import DITS, UNETS, Family

CONTEXT_HOOK = "genaccel_dit_context"


def register_audio_blocks() -> None:
    """Tell diffusers where ``StableAudioDiTBlock`` returns its hidden states (it returns one
    tensor and takes no separate encoder stream), so block-skipping caches can wrap it."""
    from diffusers.models.transformers.stable_audio_transformer import StableAudioDiTBlock

    TransformerBlockRegistry.register(StableAudioDiTBlock, TransformerBlockMetadata(
        return_hidden_states_index=0, return_encoder_hidden_states_index=None))


register_audio_blocks()


def timestep_scale(pipe: Any) -> Any:
    """``f(t) -> 0..1000``: where the timestep ``t`` a pipeline passes its transformer sits in
    its scheduler's range, in DDPM's convention (1000 = pure noise). EDM schedulers pass
    ``0.25 * log(sigma)``: mapped linearly between sigma_min and sigma_max. Schedulers already on
    a 0-1000 scale (DDPM, DDIM, DPM-Solver, flow matching's ``sigma * 1000``) are left as they are."""
    scheduler = getattr(pipe, "scheduler", None)
    noise = getattr(scheduler, "precondition_noise", None)
    config = getattr(scheduler, "config", None)
    if noise is None or config is None or "sigma_max" not in config:
        return lambda t: t
    low = float(noise(torch.tensor(float(config.sigma_min))).reshape(-1)[0])
    high = float(noise(torch.tensor(float(config.sigma_max))).reshape(-1)[0])
    return lambda t: 1000.0 * (t - low) / (high - low)
DIT_FAMILIES: tuple[Family, ...] = DITS
"""Every transformer denoiser, the speech decoders included."""
UNET_ALTERNATIVE: dict[Family, str] = dict.fromkeys((*UNETS, Family.VIDEO_UNET), "use deepcache for UNets")
EXCLUSIVE = "DiT caches"


@dataclass(frozen=True)
class FirstBlockCache:
    """First-block cache (ParaAttention; TeaCache's idea): when the first block's residual
    changed by less than ``threshold`` (relative) since the last full pass, reuse the other
    blocks' cached residual.

    Args:
        threshold: relative change below which the remaining blocks are skipped.
        per_sample: decide per batch row, so a result never depends on its batch companions.
    """

    threshold: float = 0.08
    per_sample: bool = True
    name: ClassVar[str] = "fbcache"
    families: ClassVar[tuple[Family, ...]] = DIT_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = UNET_ALTERNATIVE
    exclusive: ClassVar[str] = EXCLUSIVE

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold={self.threshold} must be in (0, 1)")


@dataclass(frozen=True)
class PyramidAttentionBroadcast:
    """Pyramid Attention Broadcast (Zhao et al. 2024): inside the timestep window
    ``[window_low, window_high]`` self-attention outputs are recomputed only every ``skip``
    calls and broadcast in between.

    Args:
        skip: recompute self-attention every ``skip`` denoiser calls.
        window_low, window_high: timesteps (0..1000) where skipping is allowed.
    """

    skip: int = 2
    window_low: int = 100
    window_high: int = 800
    name: ClassVar[str] = "pab"
    families: ClassVar[tuple[Family, ...]] = DIT_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = UNET_ALTERNATIVE
    exclusive: ClassVar[str] = EXCLUSIVE

    def __post_init__(self) -> None:
        if not 2 <= self.skip <= 10:
            raise ValueError(f"skip={self.skip} must be between 2 and 10")
        if not 0 <= self.window_low < self.window_high <= 1000:
            raise ValueError(f"window {self.window_low}..{self.window_high} must satisfy 0 <= low < high <= 1000")


@dataclass(frozen=True)
class TaylorSeer:
    """TaylorSeer (Liu et al. 2025): full passes every ``interval`` calls; in between, block
    outputs are predicted by a Taylor expansion of their recent history.

    Args:
        interval: full pass every ``interval`` calls.
        warmup: calls always computed at the start.
        order: Taylor order (1 or 2).
        scope: ``"blocks"`` forecasts each transformer block's output (diffusers' hook; the
            embeddings, modulation and output layers still run every call); ``"model"`` forecasts
            the denoiser's whole output, so a skipped call costs nothing. On small DiTs, where those
            per-call layers are a large share of a call (the 64-token video model), only ``model``
            turns the skipped calls into time.
    """

    interval: int = 3
    warmup: int = 3
    order: int = 1
    scope: str = "blocks"
    name: ClassVar[str] = "taylorseer"
    families: ClassVar[tuple[Family, ...]] = DIT_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = UNET_ALTERNATIVE
    exclusive: ClassVar[str] = EXCLUSIVE

    def __post_init__(self) -> None:
        if not 1 <= self.interval <= 20:
            raise ValueError(f"interval={self.interval} must be between 1 and 20")
        if not 0 <= self.warmup <= 50:
            raise ValueError(f"warmup={self.warmup} must be between 0 and 50")
        if self.order not in (1, 2):
            raise ValueError(f"order={self.order} must be 1 or 2")
        if self.scope not in ("blocks", "model"):
            raise ValueError(f"scope={self.scope!r} must be 'blocks' or 'model'")


@dataclass(frozen=True)
class FasterCache:
    """FasterCache (Lv et al. 2024): self-attention outputs reused every ``skip`` calls below
    timestep ``window_high`` (weighted by ``attention_weight``), and the unconditional half of
    classifier-free guidance approximated from the conditional one (its low/high-frequency
    difference from the last full call) except every ``uncond_skip`` calls below
    ``uncond_window_high``.

    Args:
        skip: recompute self-attention every ``skip`` calls inside the window.
        window_high: timesteps below this may reuse attention.
        uncond_skip: compute the unconditional branch every ``uncond_skip`` calls inside its window.
        uncond_window_high: timesteps below this may approximate the unconditional branch.
        attention_weight: weight of the fresh attention output when blending with the cached one.
        attention_only: reuse attention only, never approximate the unconditional branch (the mode
            that works where cond and uncond are separate calls, Wan, or tokens are packed, LTX).
    """

    skip: int = 2
    window_high: int = 681
    uncond_skip: int = 5
    uncond_window_high: int = 641
    attention_weight: float = 0.3
    attention_only: bool = False
    name: ClassVar[str] = "fastercache"
    families: ClassVar[tuple[Family, ...]] = DIT_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = UNET_ALTERNATIVE
    exclusive: ClassVar[str] = EXCLUSIVE

    def __post_init__(self) -> None:
        if not 2 <= self.skip <= 10 or not 2 <= self.uncond_skip <= 20:
            raise ValueError(f"skip={self.skip} must be 2..10 and uncond_skip={self.uncond_skip} 2..20")
        if not 0 < self.window_high <= 1000 or not 0 < self.uncond_window_high <= 1000:
            raise ValueError("window_high and uncond_window_high must be in (0, 1000]")
        if not 0 <= self.attention_weight <= 1:
            raise ValueError(f"attention_weight={self.attention_weight} must be between 0 and 1")


@dataclass(frozen=True)
class MagCache:
    """MagCache (Ma et al. 2025): the blocks are skipped (their last residual reused) while the
    error accumulated from the model's calibrated residual-magnitude ratios stays below
    ``threshold``, at most ``max_skip`` calls in a row, never in the first ``retention`` share of
    the steps. The decisions depend on the step only, not on the data.

    Args:
        threshold: accumulated error allowed before the blocks run again.
        max_skip: consecutive calls that may be skipped.
        retention: share of the first steps always computed.
        ratios: the model's ratio curve; empty: the one ``genaccel calibrate`` stored for it.
    """

    threshold: float = 0.06
    max_skip: int = 3
    retention: float = 0.2
    ratios: tuple[float, ...] = ()
    name: ClassVar[str] = "magcache"
    families: ClassVar[tuple[Family, ...]] = DIT_FAMILIES
    alternatives: ClassVar[dict[Family, str]] = UNET_ALTERNATIVE
    exclusive: ClassVar[str] = EXCLUSIVE

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold={self.threshold} must be in (0, 1)")
        if not 1 <= self.max_skip <= 10:
            raise ValueError(f"max_skip={self.max_skip} must be between 1 and 10")
        if not 0 <= self.retention < 1:
            raise ValueError(f"retention={self.retention} must be in [0, 1)")
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))


class _ContextHook(ModelHook):
    """Outermost hook on the transformer: sets the cache context (per row with ``per_sample``),
    records the call's timestep, counts calls."""

    def __init__(self, per_sample: bool, scale: Any = None) -> None:
        super().__init__()
        self.per_sample = per_sample
        self.calls = 0
        self.timestep = 1000.0
        self.raw_timestep = 1000.0
        self.scale = scale or (lambda t: t)
        self._position: int | None = None
        self.squeeze = False  # set by _AudioPlaneHook

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        import inspect

        names = list(inspect.signature(module.forward).parameters)
        self._position = names.index("timestep") if "timestep" in names else None
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        t = kwargs.get("timestep")
        if t is None and self._position is not None and len(args) > self._position:
            t = args[self._position]  # Stable Audio passes it positionally
        if isinstance(t, torch.Tensor):
            self.raw_timestep = float(t.reshape(-1)[0])  # one scalar per call (PAB compares it to its window)
        elif t is not None:
            self.raw_timestep = float(t)
        self.timestep = float(self.scale(self.raw_timestep))
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        rows = hidden.shape[0] if isinstance(hidden, torch.Tensor) else 1
        if isinstance(t, torch.Tensor) and t.numel() == 1 and rows > 1:  # one timestep per row, so hooks
            t = t.reshape(1).expand(rows)  # that split the batch (FasterCache) split it too (Stable Audio)
            if "timestep" in kwargs:
                kwargs["timestep"] = t
            elif self._position is not None:
                args = (*args[:self._position], t, *args[self._position + 1:])
        step = self.calls
        self.calls += 1
        if not self.per_sample or rows == 1:
            return self._call(module, "batch", step, args, kwargs)
        outputs = [self._call(module, f"row{i}", step, _rows(args, i, rows), _rows(kwargs, i, rows))
                   for i in range(rows)]
        return _concat(outputs)

    def _call(self, module: torch.nn.Module, name: str, step: int, args: Any, kwargs: Any) -> Any:
        _set_cache_context(module, CacheContext(name, step_index=step, timestep=self.timestep))
        self.squeeze = False
        try:
            output = self.fn_ref.original_forward(*args, **kwargs)
        finally:
            _set_cache_context(module, None)
        return _map_first(output, lambda t: t.squeeze(1)) if self.squeeze else output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.calls, self.timestep, self.raw_timestep = 0, 1000.0, 1000.0
        return module


def _rows(value: Any, i: int, rows: int) -> Any:
    """Row ``i`` of every batch-sized tensor inside ``value`` (tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return value[i:i + 1] if value.ndim and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: _rows(v, i, rows) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_rows(v, i, rows) for v in value)
    return value


def _concat(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, tuple):
        return tuple(_concat([o[k] for o in outputs]) for k in range(len(first)))
    if hasattr(first, "sample"):  # diffusers' Transformer2DModelOutput and friends
        return type(first)(sample=torch.cat([o.sample for o in outputs]))
    raise TypeError(f"cannot merge per-sample outputs of type {type(first).__name__}")


_PLANE_HOOK = "genaccel_audio_plane"


class _AudioPlaneHook(ModelHook):
    """Innermost hook for FasterCache on audio transformers: their output is (B, C, T), while
    FasterCache's frequency split assumes images and broadcasts a (1, 1, H, W) mask. This shows it
    the output as (B, 1, C, T) (so the split runs on the channel-time plane); the context hook
    takes the extra axis off again."""

    def __init__(self, context: _ContextHook) -> None:
        super().__init__()
        self.context = context

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.context.squeeze = _first(output).ndim == 3
        return _map_first(output, lambda t: t.unsqueeze(1)) if self.context.squeeze else output


def _first(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _map_first(output: Any, fn: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    output.sample = fn(output.sample)
    return output


class _DiTCacheHandle:
    def __init__(self, patches: Patches, transformer: torch.nn.Module, context: _ContextHook) -> None:
        self.patches, self.transformer, self.context = patches, transformer, context

    def reset(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks(recurse=True)
        self.context.reset_state(self.transformer)

    def remove(self) -> None:
        self.patches.undo()


def _install(pipe: Any, config: Any, apply: Any, hook_names: tuple[str, ...], per_sample: bool,
             wrapper: Any = None) -> _DiTCacheHandle:
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise TypeError(f"{type(pipe).__name__} has no transformer to cache")
    context = _ContextHook(per_sample, lambda t: timestep_scale(pipe)(t))  # the scheduler in use at each call
    with patching(pipe, config) as patches:
        patches.diffusers_hooks(transformer, lambda: apply(transformer, context), hook_names)
        patches.hook(transformer, context, CONTEXT_HOOK)  # registered last: outermost
        if wrapper is not None:
            patches.call_wrapper(wrapper)
    return _DiTCacheHandle(patches, transformer, context)


@technique(FirstBlockCache)
def apply_fbcache(pipe: Any, config: FirstBlockCache) -> _DiTCacheHandle:
    return _install(pipe, config,
                    lambda tr, _: apply_first_block_cache(tr, FirstBlockCacheConfig(threshold=config.threshold)),
                    (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK), config.per_sample)


@technique(PyramidAttentionBroadcast)
def apply_pab(pipe: Any, config: PyramidAttentionBroadcast) -> _DiTCacheHandle:
    def apply(transformer: torch.nn.Module, context: _ContextHook) -> None:
        apply_pyramid_attention_broadcast(transformer, PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=config.skip,
            spatial_attention_timestep_skip_range=(config.window_low, config.window_high),
            current_timestep_callback=lambda: context.timestep,
        ))

    return _install(pipe, config, apply, (_PYRAMID_ATTENTION_BROADCAST_HOOK,), per_sample=False)


_WHOLE_TAYLOR_HOOK = "genaccel_taylorseer_model"


class _WholeModelTaylorHook(ModelHook):
    """TaylorSeer over the denoiser's whole output (``scope="model"``): the same schedule as
    diffusers' block hook (``warmup`` calls computed, then one of every ``interval``), the same
    divided-difference forecast, applied to the transformer's first output.

    Our own rather than diffusers' ``TaylorSeerCacheHook`` on the root module: that hook returns a
    bare tensor when it forecasts a module whose forward returned a 1-tuple (``return_dict=False``,
    what every pipeline asks for), so the pipeline's ``[0]`` would take the first row of the batch.
    Here a forecast is returned in the structure of the last computed output. A call whose input
    shape differs from the last computed one (another batch) is computed, never forecast."""

    _is_stateful = True

    def __init__(self, interval: int, warmup: int, order: int) -> None:
        super().__init__()
        self.interval, self.warmup, self.order = interval, warmup, order
        self.reset_state(None)

    def reset_state(self, module: Any) -> Any:
        self.call = -1
        self.last: int | None = None
        self.factors: list[torch.Tensor] = []
        self.template: Any = None
        self.shape: tuple[int, ...] | None = None
        self.dtype = torch.float32
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        self.call += 1
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else None
        compute = (self.call < self.warmup or (self.call - self.warmup - 1) % self.interval == 0
                   or self.last is None or shape != self.shape)
        if not compute:
            offset = self.call - self.last  # type: ignore[operator]
            forecast = self.factors[0].clone()
            for k in range(1, len(self.factors)):
                forecast += self.factors[k] * (offset**k / math.factorial(k))
            return _map_first(_copy_output(self.template), lambda _: forecast.to(self.dtype))
        output = self.fn_ref.original_forward(*args, **kwargs)
        first = _first(output)
        fresh = [first.float()]
        if self.last is not None and self.factors and self.factors[0].shape == first.shape:
            delta = self.call - self.last
            for k in range(min(self.order, len(self.factors))):
                fresh.append((fresh[k] - self.factors[k]) / delta)
        self.factors, self.last, self.shape, self.dtype = fresh, self.call, shape, first.dtype
        self.template = _copy_output(output)
        return output


def _copy_output(output: Any) -> Any:
    """A shallow copy of a denoiser output (tensor, tuple or diffusers output object) that
    ``_map_first`` may change without touching the original."""
    if isinstance(output, (torch.Tensor, tuple)):
        return output
    return type(output)(**dict(output.items()))


@technique(TaylorSeer)
def apply_taylorseer(pipe: Any, config: TaylorSeer) -> _DiTCacheHandle:
    if config.scope == "model":
        def whole(transformer: torch.nn.Module, _: _ContextHook) -> None:
            HookRegistry.check_if_exists_or_initialize(transformer).register_hook(
                _WholeModelTaylorHook(config.interval, config.warmup, config.order), _WHOLE_TAYLOR_HOOK)

        return _install(pipe, config, whole, (_WHOLE_TAYLOR_HOOK,), per_sample=False)

    def apply(transformer: torch.nn.Module, _: _ContextHook) -> None:
        apply_taylorseer_cache(transformer, TaylorSeerCacheConfig(
            cache_interval=config.interval, disable_cache_before_step=config.warmup, max_order=config.order,
            taylor_factors_dtype=torch.float32,
            # whole blocks: diffusers' default patterns ("...attn") fullmatch no PixArt-style name (attn1, attn2)
            cache_identifiers=[r"^(transformer_blocks|blocks|single_transformer_blocks)\.\d+$"],
        ))

    return _install(pipe, config, apply, (_TAYLORSEER_CACHE_HOOK,), per_sample=False)


OUTSIDE = 10**6
"""A timestep outside every window."""


@technique(FasterCache)
def apply_fastercache(pipe: Any, config: FasterCache) -> _DiTCacheHandle:
    """Requests without classifier-free guidance are refused before this runs (``check_fastercache``):
    its hooks assume batches of unconditional and conditional halves."""

    def apply(transformer: torch.nn.Module, context: _ContextHook) -> None:
        def timestep() -> int:
            # attention-only mode would reuse attention at the first call, before anything is cached
            # (diffusers 0.42.1 skips whenever the timestep is in the window): the first call is outside
            return OUTSIDE if config.attention_only and context.calls <= 1 else int(context.timestep)

        faster = FasterCacheConfig(
            spatial_attention_block_skip_range=config.skip,
            spatial_attention_timestep_skip_range=(-1, config.window_high),
            unconditional_batch_skip_range=config.uncond_skip,
            unconditional_batch_timestep_skip_range=(-1, config.uncond_window_high),
            attention_weight_callback=lambda _: config.attention_weight,
            tensor_format="BCHW", current_timestep_callback=timestep,
            is_guidance_distilled=config.attention_only,
        )
        # Stable Audio's global (timing) tokens are batched like the hidden states: split them too
        faster._unconditional_conditional_input_kwargs_identifiers = (
            *faster._unconditional_conditional_input_kwargs_identifiers, "global_hidden_states")
        if "Audio" in type(transformer).__name__:  # (B, C, T) audio, not LTX's packed (B, N, C) tokens
            HookRegistry.check_if_exists_or_initialize(transformer).register_hook(_AudioPlaneHook(context),
                                                                                  _PLANE_HOOK)
        apply_faster_cache(transformer, faster)

    return _install(pipe, config, apply, (_PLANE_HOOK, _FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK),
                    per_sample=False)


@technique(MagCache)
def apply_magcache(pipe: Any, config: MagCache) -> _DiTCacheHandle:
    curve = list(config.ratios) or magcache_ratios(model_folder(pipe))
    if not curve:
        raise InvalidRequest("techniques", "magcache", "has no calibrated ratios for this model",
                             "run `genaccel calibrate --model MODEL` once, or use fbcache or taylorseer")
    ratios = torch.tensor(curve, dtype=torch.float32)
    mag = MagCacheConfig(threshold=config.threshold, max_skip_steps=config.max_skip,
                         retention_ratio=config.retention, num_inference_steps=len(curve), mag_ratios=ratios)

    def apply(transformer: torch.nn.Module, _: _ContextHook) -> None:
        apply_mag_cache(transformer, mag)

    def at_this_step_count(call: Any) -> Any:  # the curve is stretched to each call's step count
        def run(**kwargs: Any) -> Any:
            steps = int(kwargs.get("num_inference_steps") or len(curve))
            mag.num_inference_steps = steps
            mag.mag_ratios = nearest_interp(ratios, steps)
            return call(**kwargs)
        return run

    return _install(pipe, config, apply, (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK), per_sample=False,
                    wrapper=at_this_step_count)


@checks(FasterCache)
def check_fastercache(config: FasterCache, context: RequestContext) -> None:
    if context.guidance_scale <= 1 and not config.attention_only:
        raise InvalidRequest("techniques", "fastercache", f"needs classifier-free guidance and guidance_scale="
                             f"{context.guidance_scale:g} runs none",
                             "use fbcache or taylorseer, pass --guidance above 1, or fastercache with "
                             "attention_only=true")


@checks(MagCache)
def check_magcache(config: MagCache, context: RequestContext) -> None:
    if config.ratios or magcache_ratios(context.location, context.settings) is not None:
        return
    how = (f"run `genaccel calibrate --model {context.model}` once" if context.location is not None
           else "pass ratios (built-in models have no folder to calibrate)")
    raise InvalidRequest("techniques", "magcache", f"has no calibrated ratios for {context.model or 'this model'}",
                         f"{how}, or use fbcache or taylorseer")


warns(FirstBlockCache, PyramidAttentionBroadcast, TaylorSeer)(few_steps_warning)
