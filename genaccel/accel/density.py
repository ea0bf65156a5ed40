"""``density``: timestep-dependent token density for DiTs (FlexDiT's idea, Chang et al. 2024):
in the early, noisy steps the transformer blocks run on pooled tokens (``pool`` x ``pool``
patches averaged into one), in the late, detailed steps on all of them. Training-free.

Only the blocks' *update* is computed at low density: the pooled tokens go through the blocks,
and their change is spread back over the full grid (nearest) and added to the full-density
input, so the detail the input already has is kept. The decision depends only on the call's
timestep, never on the data, so a result does not depend on which requests shared its batch.

Why our own: diffusers has no token-density hook; tomesd's merging is for UNets. Hooks go on
the transformer instance (its timestep and latent size), its first block (pool) and its last
block (spread back); ``remove()`` takes them off.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from genaccel.accel.base import technique
from genaccel.errors import InvalidRequest

log = logging.getLogger(__name__)
SUPPORTED = ("PixArtTransformer2DModel", "DiTTransformer2DModel")
"""Transformers whose blocks take and return the image tokens alone, in row-major patch order."""


@dataclass(frozen=True)
class FlexDensity:
    """Args:
        pool: tokens averaged per side in the low-density steps (2: a quarter of the tokens).
        threshold: calls at timesteps at or above this (0..1000, the noisy ones) run pooled.
    """

    pool: int = 2
    threshold: int = 600
    name: ClassVar[str] = "density"
    families: ClassVar[tuple[str, ...]] = ("image-dit",)
    alternatives: ClassVar[dict[str, str]] = {"sd-unet": "use tome or todo for UNets",
                                              "sdxl-unet": "use tome or todo for UNets"}

    def __post_init__(self) -> None:
        if self.pool not in (2, 4):
            raise ValueError(f"pool={self.pool} must be 2 or 4")
        if not 0 <= self.threshold <= 1001:
            raise ValueError(f"threshold={self.threshold} must be between 0 and 1001")


class _State:
    def __init__(self, config: FlexDensity, patch: int) -> None:
        self.config, self.patch = config, patch
        self.grid: tuple[int, int] | None = None  # pooled this call: the full token grid
        self.full: torch.Tensor | None = None
        self.pooled: torch.Tensor | None = None
        self.pooled_calls = 0

    def start_call(self, latents: torch.Tensor, timestep: Any) -> None:
        t = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep or 0)
        h, w = latents.shape[-2] // self.patch, latents.shape[-1] // self.patch
        pool = self.config.pool
        self.grid = (h, w) if t >= self.config.threshold and h % pool == 0 and w % pool == 0 else None
        self.full = self.pooled = None
        self.pooled_calls += self.grid is not None


def _pool(tokens: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    b, _, c = tokens.shape
    h, w = grid
    image = tokens.transpose(1, 2).reshape(b, c, h, w)
    return F.avg_pool2d(image, k).flatten(2).transpose(1, 2)


def _spread(tokens: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    b, _, c = tokens.shape
    h, w = grid
    image = tokens.transpose(1, 2).reshape(b, c, h // k, w // k)
    return image.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3).flatten(2).transpose(1, 2)


class _DensityHandle:
    def __init__(self, state: _State, hooks: list[Any]) -> None:
        self.state, self.hooks = state, hooks

    def reset(self) -> None:
        self.state.grid = self.state.full = self.state.pooled = None
        self.state.pooled_calls = 0

    def remove(self) -> None:
        while self.hooks:
            self.hooks.pop().remove()


@technique(FlexDensity)
def apply_density(pipe: Any, config: FlexDensity) -> _DensityHandle:
    transformer = getattr(pipe, "transformer", None)
    name = type(transformer).__name__
    if transformer is None or name not in SUPPORTED:
        raise InvalidRequest("techniques", "density", f"does not fit the transformer {name}",
                             f"it supports {', '.join(SUPPORTED)}; use taylorseer or fbcache there")
    blocks = transformer.transformer_blocks
    state = _State(config, int(transformer.config.patch_size))
    t_index = list(inspect.signature(transformer.forward).parameters).index("timestep")

    def on_call(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        latents = args[0] if args else kwargs["hidden_states"]
        state.start_call(latents, kwargs.get("timestep", args[t_index] if len(args) > t_index else None))

    def before_blocks(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if state.grid is None:
            return None
        tokens = args[0] if args else kwargs["hidden_states"]
        state.full = tokens
        state.pooled = _pool(tokens, state.grid, config.pool)
        if args:
            return (state.pooled, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": state.pooled}

    def after_blocks(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if state.grid is None or state.full is None or state.pooled is None:
            return None
        return state.full + _spread(output - state.pooled, state.grid, config.pool)

    hooks = [
        transformer.register_forward_pre_hook(on_call, with_kwargs=True),
        blocks[0].register_forward_pre_hook(before_blocks, with_kwargs=True),
        blocks[-1].register_forward_hook(after_blocks, with_kwargs=True),
    ]
    return _DensityHandle(state, hooks)
