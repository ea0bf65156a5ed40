"""ToDo for Stable Diffusion UNets (Smith et al. 2024, "ToDo: Token Downsampling for Efficient
Generation of High-Resolution Images").

In the self-attention of every transformer block at a shallow enough UNet level
(``max_downsample``), keys and values are computed from the token grid downsampled by ``factor``
per spatial dimension with nearest-neighbour sampling, the paper's D(·) (the authors' reference
code uses ``F.interpolate(mode="nearest")`` by default: for a grid that ``factor`` divides, the
top-left token of each ``factor`` x ``factor`` cell). Queries keep every token, so nothing is
unmerged, and self-attention costs N·N/factor² instead of N².

Written here rather than taken from the authors' code (ImprovedTokenMerge, not a package) because
it registers plain forward pre-hooks on ``to_k`` and ``to_v`` (each downsamples the same tokens
again) and reads the timestep with ``.item()`` (a host sync every step). Here: one diffusers hook
per self-attention *instance* that passes the downsampled tokens as the attention's
``encoder_hidden_states`` (so both projections run on N/factor² tokens, downsampled once), the
grid read from each UNet call's latent shape, and ``remove()`` restoring every instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers.hooks import ModelHook

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patches, patching
from genaccel.accel.tome import (
    DIT_ALTERNATIVE,
    DOWNSAMPLES,
    LatentSize,
    LatentSizeHook,
    hook_all,
    sd_blocks,
    token_grid,
)
from genaccel.families import Family

HOOK = "genaccel_todo"


@dataclass(frozen=True)
class ToDoConfig:
    """Args:
        factor: keys/values keep one token per ``factor`` x ``factor`` cell (nearest-neighbour).
        max_downsample: downsample in blocks whose token grid is downsampled at most this much (1, 2, 4, 8).
    """

    factor: int = 2
    max_downsample: int = 1
    name: ClassVar[str] = "todo"
    families: ClassVar[tuple[Family, ...]] = (Family.SD_UNET, Family.SDXL_UNET)
    alternatives: ClassVar[dict[Family, str]] = DIT_ALTERNATIVE
    comes_after: ClassVar[dict[str, str]] = {
        "tome": "ToMe applied after todo merges the tokens before todo sees them, and todo then does nothing"}

    def __post_init__(self) -> None:
        if not 2 <= self.factor <= 8:
            raise ValueError(f"factor={self.factor} must be between 2 and 8")
        if self.max_downsample not in DOWNSAMPLES:
            raise ValueError(f"max_downsample={self.max_downsample} must be one of {', '.join(map(str, DOWNSAMPLES))}")


def downsample_tokens(x: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """(B, h*w, C) -> (B, (h//factor)*(w//factor), C), nearest-neighbour on the (h, w) grid."""
    batch, _, channels = x.shape
    grid = x.reshape(batch, h, w, channels).permute(0, 3, 1, 2)  # (B, C, h, w)
    small = F.interpolate(grid, size=(h // factor, w // factor), mode="nearest")  # (B, C, h', w')
    return small.permute(0, 2, 3, 1).reshape(batch, -1, channels)


class _KeyValueHook(ModelHook):
    """On a block's self-attention: keys and values from the downsampled tokens."""

    def __init__(self, size: LatentSize, config: ToDoConfig) -> None:
        super().__init__()
        self.size, self.config = size, config

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        x = args[0] if args else kwargs["hidden_states"]  # (B, N, C)
        if x.ndim != 3 or kwargs.get("encoder_hidden_states") is not None or kwargs.get("attention_mask") is not None:
            return args, kwargs
        grid = token_grid(x.shape[1], self.size.hw, self.config.max_downsample)
        factor = self.config.factor
        if grid is None or min(grid) < factor:
            return args, kwargs
        if getattr(module, "fused_projections", False):
            raise RuntimeError("ToDo needs separate key/value projections; call unfuse_qkv_projections() "
                               "or remove the todo technique")
        return args, {**kwargs, "encoder_hidden_states": downsample_tokens(x, *grid, factor)}


class ToDoHandle:
    def __init__(self, patches: Patches, unet: torch.nn.Module, modules: list[torch.nn.Module],
                 size: LatentSize) -> None:
        self.patches, self.unet, self.modules, self.size = patches, unet, modules, size

    def reset(self) -> None:
        self.size.hw = None  # ToDo carries nothing between calls

    def remove(self) -> None:
        self.patches.undo()


@technique(ToDoConfig)
def apply_todo(pipe: Any, config: ToDoConfig) -> ToDoHandle:
    """Apply ToDo to the self-attention of ``pipe.unet``'s transformer blocks (instance hooks).

    Example:
        >>> handle = apply_todo(pipe, ToDoConfig(factor=2))
        >>> image = pipe("a red circle").images[0]
        >>> handle.remove()
    """
    unet = pipe.unet
    attentions = [block.attn1 for block in sd_blocks(unet) if not block.only_cross_attention
                  and not getattr(block.attn1, "norm_cross", None)]
    if not attentions:
        raise ValueError(f"ToDo found no Stable-Diffusion self-attention in {type(unet).__name__}")
    size = LatentSize()
    hooks: list[tuple[torch.nn.Module, ModelHook]] = [(unet, LatentSizeHook(size))]
    hooks += [(attn, _KeyValueHook(size, config)) for attn in attentions]
    with patching(pipe, config) as patches:
        hook_all(patches, hooks, HOOK)
    return ToDoHandle(patches, unet, attentions, size)
