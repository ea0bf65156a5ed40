"""DeepCache for UNets (Ma et al. 2023, "DeepCache: Accelerating Diffusion Models for Free").

Every ``interval``-th denoiser call runs the whole UNet and keeps the outputs of its deep
modules; the calls in between recompute only the shallow branch (``conv_in``, the first
layers of the skip path, the last layers of the outermost up block and ``conv_out``) and reuse
the kept deep features. ``branch`` picks how deep the recomputed branch goes (0 = shallowest),
numbered like the ``deepcache`` package: layer ``branch % 3`` of block ``branch // 3``.
AnimateDiff's ``UNetMotionModel`` (sample ``(B, C, F, H, W)``) is cached the same way: a
layer's temporal ``motion_modules`` entry is reused together with its resnet and attention.

Written here rather than taken from the ``deepcache`` package (which tests use as the oracle)
because that package assigns ``forward`` on modules directly, finds the step with a host sync
(``timestep.item()`` and a list search, wrong for repeated timesteps), and keeps its state
outside the job. Here: diffusers ``HookRegistry`` hooks on the instance, a Python call counter
(no sync, any scheduler), a full recompute whenever the batch shape changes, and ``reset()``
per job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from diffusers.hooks import ModelHook

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patches, patching
from genaccel.accel.rules import few_steps_warning, warns
from genaccel.families import DITS, Family

HOOK = "genaccel_deepcache"


@dataclass(frozen=True)
class DeepCacheConfig:
    """Args:
        interval: run the full UNet every ``interval`` calls (1 = never reuse).
        branch: depth of the recomputed branch, 0 = shallowest (fastest).
    """

    interval: int = 3
    branch: int = 0
    name: ClassVar[str] = "deepcache"
    families: ClassVar[tuple[Family, ...]] = (Family.SD_UNET, Family.SDXL_UNET, Family.VIDEO_UNET)
    alternatives: ClassVar[dict[Family, str]] = dict.fromkeys(
        DITS, "use a DiT cache instead: first-block cache, PAB, TaylorSeer or MagCache")

    def __post_init__(self) -> None:
        if not 1 <= self.interval <= 50:
            raise ValueError(f"interval={self.interval} must be between 1 and 50")
        if not 0 <= self.branch <= 11:
            raise ValueError(f"branch={self.branch} must be between 0 and 11")


@dataclass
class _State:
    calls: int = 0
    reuse: bool = False
    shape: tuple[int, ...] | None = None
    outputs: dict[int, Any] = field(default_factory=dict)

    def reset(self) -> None:
        self.calls, self.reuse, self.shape = 0, False, None
        self.outputs.clear()


class _StepHook(ModelHook):
    """On the UNet: decides, per call, whether the deep modules run or reuse their outputs."""

    def __init__(self, state: _State, interval: int) -> None:
        super().__init__()
        self.state, self.interval = state, interval

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        sample = args[0] if args else kwargs["sample"]
        shape = tuple(sample.shape)
        s = self.state
        s.reuse = s.calls % self.interval != 0 and s.shape == shape and bool(s.outputs)
        if not s.reuse:
            s.outputs.clear()
            s.shape = shape
        s.calls += 1
        return args, kwargs


class _ReuseHook(ModelHook):
    """On one deep module: returns its kept output on reuse calls, keeps it on full calls."""

    def __init__(self, state: _State, key: int) -> None:
        super().__init__()
        self.state, self.key = state, key

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.state.reuse:
            return self.state.outputs[self.key]
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.state.outputs[self.key] = output
        return output


def _layers(block: torch.nn.Module) -> list[tuple[int, torch.nn.Module]]:
    """A block's per-layer modules with their layer index: resnets, attentions and, in the motion
    blocks of AnimateDiff's ``UNetMotionModel``, the temporal ``motion_modules`` that run after them."""
    return [(layer_i, mod) for kind in ("attentions", "resnets", "motion_modules")
            for layer_i, mod in enumerate(getattr(block, kind, None) or [])]


def _deep_modules(unet: Any, branch: int) -> list[torch.nn.Module]:
    """The modules whose work is reused, by the same rule as the ``deepcache`` package."""
    block_id, layer_id = branch // 3, branch % 3
    chosen: list[torch.nn.Module] = []

    def down_skipped(block_i: int, layer_i: int) -> bool:
        return block_i > block_id or (block_i == block_id and layer_i >= layer_id)

    def up_skipped(block_i: int, layer_i: int) -> bool:
        return block_i > block_id or (block_i == block_id and layer_i > layer_id)

    for block_i, block in enumerate(unet.down_blocks):
        if down_skipped(block_i, 0):
            chosen.append(block)
            continue
        chosen.extend(mod for layer_i, mod in _layers(block) if down_skipped(block_i, layer_i))
        if down_skipped(block_i, len(getattr(block, "resnets", None) or [])):
            chosen.extend(getattr(block, "downsamplers", None) or [])
    chosen.append(unet.mid_block)
    count = len(unet.up_blocks)
    for index, block in enumerate(unet.up_blocks):
        block_i = count - index - 1  # 0 = outermost (last) up block
        if up_skipped(block_i, 0):
            chosen.append(block)
            continue
        layers = len(getattr(block, "resnets", None) or [])
        chosen.extend(mod for layer_index, mod in _layers(block) if up_skipped(block_i, layers - layer_index - 1))
    return chosen


class DeepCacheHandle:
    def __init__(self, patches: Patches, unet: Any, modules: list[torch.nn.Module], state: _State) -> None:
        self.patches, self.unet, self.modules, self.state = patches, unet, modules, state

    def reset(self) -> None:
        self.state.reset()

    def remove(self) -> None:
        self.patches.undo()
        self.state.reset()


@technique(DeepCacheConfig)
def apply_deepcache(pipe: Any, config: DeepCacheConfig) -> DeepCacheHandle:
    unet = pipe.unet
    state = _State()
    modules = _deep_modules(unet, config.branch)
    with patching(pipe, config) as patches:
        patches.hook(unet, _StepHook(state, config.interval), HOOK)
        for key, module in enumerate(modules):
            patches.hook(module, _ReuseHook(state, key), HOOK)
    return DeepCacheHandle(patches, unet, modules, state)


warns(DeepCacheConfig)(few_steps_warning)
