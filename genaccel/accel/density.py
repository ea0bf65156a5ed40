"""``density``: timestep-dependent token density for DiTs (FlexDiT's idea, Chang et al. 2024):
in the early, noisy steps self-attention attends to pooled tokens (``pool`` x ``pool`` patches
averaged into one key/value), in the late, detailed steps to all of them. Training-free.

Along time (video DiTs whose blocks alternate spatial and temporal attention, Latte): the temporal
blocks' self-attention, over the ``F`` frames of each patch position, attends to ``pool`` adjacent
frames averaged into one key/value in the noisy steps (``time=True``), beside the spatial pooling in
the spatial blocks (``space=True``).

Along time in audio DiTs (Stable Audio's ``StableAudioDiTModel``, music-ref's mel DiT), whose
tokens are time frames: in the noisy steps each self-attention's keys/values are ``pool`` adjacent
frames averaged (after the rotary position embedding, so each pooled key carries its frames'
positions), the prepended global token kept as it is. Stable Audio's processor rotates keys with the
queries' table, so pooled keys cannot go through it: ``_PooledTimeAttention`` computes that one
attention itself in the pooled calls and hands every other call to the model's own processor.

Every token still gets its own query, MLP and output, so no detail is lost to the pooling; what
shrinks is the attention's key/value set (ToDo's key/value downsampling, Smith et al. 2024,
applied on a timestep schedule). A first version ran whole blocks on pooled tokens and spread
their update back; averaging four noisy tokens halves their noise, the blocks read that as a
less noisy timestep, and pictures fell apart (prompt accuracy 0.31 on shapes-dit), so it was
dropped. The decision depends only on the call's timestep, never on the data, so a result does
not depend on which requests shared its batch.

Why our own: diffusers has no token-density hook; tomesd and ToDo are for UNets. Hooks go on the
transformer instance (its timestep and latent size) and on each block's self-attention (its
key/value input); ``remove()`` takes them off.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patches, patching
from genaccel.accel.rules import RequestContext, checks
from genaccel.errors import InvalidRequest
from genaccel.families import UNETS, Family

log = logging.getLogger(__name__)
SUPPORTED = ("PixArtTransformer2DModel", "DiTTransformer2DModel", "LatteTransformer3DModel", "StableAudioDiTModel")
"""Transformers whose blocks take and return the image tokens alone, in row-major patch order
(Latte: spatial blocks over ``(B*F, N, C)``, temporal blocks over ``(B*N, F, C)``), and Stable
Audio's, whose tokens are a global token and then time frames."""
AUDIO = "StableAudioDiTModel"
PIPELINES = {"PixArtAlphaPipeline": "PixArtTransformer2DModel", "PixArtSigmaPipeline": "PixArtTransformer2DModel",
             "DiTPipeline": "DiTTransformer2DModel", "LattePipeline": "LatteTransformer3DModel",
             "StableAudioPipeline": AUDIO, "MelDiTPipeline": AUDIO}
"""Pipelines whose transformer is one of ``SUPPORTED`` (for the check before a model is loaded)."""


@dataclass(frozen=True)
class FlexDensity:
    """Args:
        pool: tokens averaged per side in the low-density steps (2: a quarter of the tokens), and
            frames averaged per key/value along time.
        threshold: calls at timesteps at or above this (0..1000, the noisy ones; other schedulers'
            timesteps, EDM's, mapped onto that range) run pooled.
        space: pool the spatial attention's keys/values (image and video DiTs).
        time: pool the temporal attention's keys/values (video DiTs with temporal blocks; audio DiTs,
            where it is the only kind).
    """

    pool: int = 2
    threshold: int = 600
    space: bool = True
    time: bool = True
    name: ClassVar[str] = "density"
    families: ClassVar[tuple[Family, ...]] = (Family.IMAGE_DIT, Family.VIDEO_DIT, Family.AUDIO_DIT)
    alternatives: ClassVar[dict[Family, str]] = dict.fromkeys(UNETS, "use tome or todo for UNets")

    def __post_init__(self) -> None:
        if self.pool not in (2, 4):
            raise ValueError(f"pool={self.pool} must be 2 or 4")
        if not 0 <= self.threshold <= 1001:
            raise ValueError(f"threshold={self.threshold} must be between 0 and 1001")
        if not (self.space or self.time):
            raise ValueError("space=False and time=False pool nothing: leave one on, or drop density")


class _State:
    def __init__(self, config: FlexDensity, patch: int) -> None:
        self.config, self.patch = config, patch
        self.grid: tuple[int, int] | None = None  # this call attends to pooled tokens: the full token grid
        self.frames: int | None = None  # this call attends to pooled frames: their count
        self.pooled_calls = 0

    def start_call(self, latents: torch.Tensor, timestep: Any) -> None:
        t = _scalar(timestep)
        h, w = latents.shape[-2] // self.patch, latents.shape[-1] // self.patch
        pool, noisy = self.config.pool, t >= self.config.threshold
        space = noisy and self.config.space and h % pool == 0 and w % pool == 0
        self.grid = (h, w) if space else None
        frames = latents.shape[2] if latents.ndim == 5 else 0
        self.frames = frames if noisy and self.config.time and frames and frames % pool == 0 else None
        self.pooled_calls += self.grid is not None or self.frames is not None


def _scalar(timestep: Any) -> float:
    """A call's timestep as one number (a tensor holds one per row, all equal)."""
    return float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep or 0)


def _pool_time(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """``(B*N, F, C)`` -> ``(B*N, F/k, C)``: ``k`` adjacent frames averaged."""
    return F.avg_pool1d(tokens.transpose(1, 2), k).transpose(1, 2)


def _pool(tokens: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    b, _, c = tokens.shape
    h, w = grid
    image = tokens.transpose(1, 2).reshape(b, c, h, w)
    return F.avg_pool2d(image, k).flatten(2).transpose(1, 2)


class _DensityHandle:
    def __init__(self, patches: Patches, state: _State) -> None:
        self.patches, self.state = patches, state

    def reset(self) -> None:
        self.state.grid = None
        self.state.frames = None
        self.state.pooled_calls = 0

    def remove(self) -> None:
        self.patches.undo()


class _PooledTimeAttention:
    """Stable Audio self-attention with keys/values pooled along time while ``state.frames`` is
    set (a noisy call); otherwise the model's own processor runs unchanged."""

    def __init__(self, inner: Any, state: _State) -> None:
        self.inner, self.state = inner, state

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, rotary_emb: Any = None) -> torch.Tensor:
        k = self.state.config.pool
        if not self.state.frames or encoder_hidden_states is not None or attention_mask is not None \
                or hidden_states.ndim != 3 or hidden_states.shape[1] <= k:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.embeddings import apply_rotary_emb

        b, n, _ = hidden_states.shape
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query, key, value = (x.view(b, n, -1, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        if rotary_emb is not None:
            rot = rotary_emb[0].shape[-1]
            query, key = (torch.cat([apply_rotary_emb(x[..., :rot].float(), rotary_emb, use_real=True,
                                                      use_real_unbind_dim=-2).to(x.dtype), x[..., rot:]], dim=-1)
                          for x in (query, key))
        key, value = _pool_frames(key, k), _pool_frames(value, k)
        if key.shape[1] != attn.heads:  # grouped-query attention: repeat the key/value heads
            key = key.repeat_interleave(attn.heads // key.shape[1], dim=1)
            value = value.repeat_interleave(attn.heads // value.shape[1], dim=1)
        out = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out.to(query.dtype)))


def _pool_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, H, 1 + T, D)``: the global token kept, then ``k`` adjacent frames averaged (the last
    ``T mod k`` frames kept as they are)."""
    frames = x[:, :, 1:]
    whole = frames.shape[2] // k * k
    b, h, _, d = x.shape
    pooled = frames[:, :, :whole].reshape(b, h, whole // k, k, d).mean(dim=3)
    return torch.cat([x[:, :, :1], pooled, frames[:, :, whole:]], dim=2)


def _unsupported(name: str) -> InvalidRequest:
    return InvalidRequest("techniques", "density", f"does not fit the transformer {name}",
                          f"it supports {', '.join(SUPPORTED)}; use taylorseer or fbcache there")


@technique(FlexDensity)
def apply_density(pipe: Any, config: FlexDensity) -> _DensityHandle:
    transformer = getattr(pipe, "transformer", None)
    name = type(transformer).__name__
    if transformer is None or name not in SUPPORTED:
        raise _unsupported(name)
    t_index = list(inspect.signature(transformer.forward).parameters).index("timestep")
    if name == AUDIO:
        return _apply_audio_density(pipe, transformer, config, t_index)
    state = _State(config, int(transformer.config.patch_size))

    def on_call(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        latents = args[0] if args else kwargs["hidden_states"]
        state.start_call(latents, kwargs.get("timestep", args[t_index] if len(args) > t_index else None))

    def pooled_keys(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if state.grid is None:
            return None
        tokens = args[0] if args else kwargs["hidden_states"]
        if tokens.ndim != 3 or tokens.shape[1] != state.grid[0] * state.grid[1]:
            return None
        return args, {**kwargs, "encoder_hidden_states": _pool(tokens, state.grid, config.pool)}

    def pooled_frames(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if state.frames is None:
            return None
        tokens = args[0] if args else kwargs["hidden_states"]
        if tokens.ndim != 3 or tokens.shape[1] != state.frames:
            return None
        return args, {**kwargs, "encoder_hidden_states": _pool_time(tokens, config.pool)}

    with patching(pipe, config) as patches:
        patches.torch_hook(transformer.register_forward_pre_hook(on_call, with_kwargs=True))
        for block in transformer.transformer_blocks:
            patches.torch_hook(block.attn1.register_forward_pre_hook(pooled_keys, with_kwargs=True))
        for block in getattr(transformer, "temporal_transformer_blocks", []):
            patches.torch_hook(block.attn1.register_forward_pre_hook(pooled_frames, with_kwargs=True))
    return _DensityHandle(patches, state)


def _apply_audio_density(pipe: Any, transformer: Any, config: FlexDensity, t_index: int) -> _DensityHandle:
    from genaccel.accel.dit_cache import timestep_scale

    state = _State(config, 1)
    scale = timestep_scale(pipe)

    def on_call(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = _scalar(kwargs.get("timestep", args[t_index] if len(args) > t_index else None))
        frames = (args[0] if args else kwargs["hidden_states"]).shape[-1]
        state.frames = frames if config.time and scale(t) >= config.threshold else None
        state.pooled_calls += state.frames is not None

    with patching(pipe, config) as patches:
        patches.torch_hook(transformer.register_forward_pre_hook(on_call, with_kwargs=True))
        for block in transformer.transformer_blocks:
            patches.set_attribute(block.attn1, "processor", _PooledTimeAttention(block.attn1.processor, state))
    return _DensityHandle(patches, state)


@checks(FlexDensity)
def check_density(config: FlexDensity, context: RequestContext) -> None:
    """Refuse a model whose transformer density does not support, where its folder or pipeline says so."""
    name = context.component_class("transformer") or PIPELINES.get(context.pipeline_class)
    if name is None and context.family == Family.VIDEO_DIT:  # of the video DiTs, only Latte's blocks fit
        name = f"of {context.pipeline_class}"
    if name is not None and name not in SUPPORTED:
        raise _unsupported(name)
    if name == AUDIO and not config.time:
        raise InvalidRequest("techniques", "density", "time=False pools nothing on an audio DiT, whose tokens are "
                             "time frames", "leave time on (the default)")
