"""ToMe for Stable Diffusion UNets (Bolya & Hoffman 2023, "Token Merging for Fast Stable Diffusion").

In every transformer block at a shallow enough UNet level (``max_downsample``), the image tokens
are split into destinations (one per ``sy`` x ``sx`` cell: a random one, or the top-left one
without ``use_rand``) and sources; the ``ratio`` share of all tokens, taken from the sources most
similar to some destination (cosine similarity of the block's input), are averaged into that
destination (bipartite soft matching). Self-attention (and, if asked, cross-attention and the
MLP) runs on the fewer tokens, and its output is copied back to every merged position
("unmerge") before the residual add.

Written here rather than taken from ``tomesd`` (the tests' oracle, same math) because ``tomesd``
swaps each block's class for a generated subclass whose ``forward`` is a copy of an old diffusers
block forward (it ignores ``norm_type``, positional embeddings, GLIGEN and forward chunking), and
forks its random generator from the *global* RNG at first use, so a picture depends on whatever
ran before it. Here: diffusers ``HookRegistry`` hooks on the block *instances* and on their
attention / feed-forward sub-modules, so diffusers' own block forward runs unchanged and
``remove()`` restores every instance; the token grid is read from each UNet call's latent shape
(Python ints, no host sync); randomness comes from the technique's own ``torch.Generator``
(seeded from ``seed``, re-seeded by ``reset()`` before every job), one sub-grid draw per block call
shared by the whole batch (so the conditional and unconditional halves of a CFG batch agree, and a
sample does not depend on its batch companions: ``tomesd`` turns randomness off for odd batches,
here ``use_rand`` means what it says).

On SDXL the first UNet level has no attention, so ``max_downsample=1`` (the default, as in
``tomesd``) merges nothing there; use 2 or more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers.hooks import ModelHook
from diffusers.models.attention import BasicTransformerBlock

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patches, patching
from genaccel.families import DITS, Family

HOOK = "genaccel_tome"
DOWNSAMPLES = (1, 2, 4, 8)
DIT_ALTERNATIVE: dict[Family, str] = {
    **dict.fromkeys(DITS, "for DiTs use a DiT cache (fbcache, pab, taylorseer)"),
    Family.IMAGE_DIT: "for image DiTs use token-density control (density) or a DiT cache (fbcache, pab, taylorseer)",
}
Merge = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ToMeConfig:
    """Options as in ``tomesd.apply_patch``, plus the seed of the technique's own generator.

    Args:
        ratio: share of a block's tokens merged away, at most ``1 - 1/(sx*sy)``.
        max_downsample: merge in blocks whose token grid is downsampled at most this much (1, 2, 4, 8).
        sx, sy: width and height of the cells that each keep one destination token.
        use_rand: pick each cell's destination at random (else its top-left token).
        merge_attn, merge_crossattn, merge_mlp: which parts of a block run on merged tokens.
        seed: seed of the generator behind ``use_rand`` (re-seeded before every job).
    """

    ratio: float = 0.5
    max_downsample: int = 1
    sx: int = 2
    sy: int = 2
    use_rand: bool = True
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False
    seed: int = 0
    name: ClassVar[str] = "tome"
    families: ClassVar[tuple[Family, ...]] = (Family.SD_UNET, Family.SDXL_UNET)
    alternatives: ClassVar[dict[Family, str]] = DIT_ALTERNATIVE

    def __post_init__(self) -> None:
        for key in ("sx", "sy"):
            if not 1 <= getattr(self, key) <= 8:
                raise ValueError(f"{key}={getattr(self, key)} must be between 1 and 8")
        cell = self.sx * self.sy
        if cell < 2:
            raise ValueError(f"sx={self.sx}, sy={self.sy}: a cell must hold at least 2 tokens to merge any")
        limit = 1 - 1 / cell
        if not 0 <= self.ratio <= limit:
            raise ValueError(f"ratio={self.ratio} must be between 0 and {limit:g} (1 - 1/(sx*sy) with "
                             f"sx={self.sx}, sy={self.sy}: each cell keeps one token)")
        if self.max_downsample not in DOWNSAMPLES:
            raise ValueError(f"max_downsample={self.max_downsample} must be one of {', '.join(map(str, DOWNSAMPLES))}")
        if not (self.merge_attn or self.merge_crossattn or self.merge_mlp):
            raise ValueError("merge_attn, merge_crossattn and merge_mlp are all false: nothing would be merged")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed={self.seed} must be between 0 and 2**63 - 1")


# ---------------------------------------------------------------------------------------------
# Shared with ToDo: the latent size of the UNet call in progress, and a block's token grid.


class LatentSize:
    """(height, width) of the latent the UNet is being called on; None outside a UNet call."""

    def __init__(self) -> None:
        self.hw: tuple[int, int] | None = None


class LatentSizeHook(ModelHook):
    """On the UNet: records the latent's spatial size for the block hooks of this call."""

    def __init__(self, size: LatentSize) -> None:
        super().__init__()
        self.size = size

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        sample = args[0] if args else kwargs["sample"]  # (B, C, H, W)
        self.size.hw = (sample.shape[-2], sample.shape[-1])
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.size.hw = None
        return output


def token_grid(tokens: int, latent: tuple[int, int] | None, max_downsample: int) -> tuple[int, int] | None:
    """The (h, w) grid of a block's ``tokens`` (as ``tomesd`` infers it from the latent size), or
    None when the block sits deeper than ``max_downsample`` or its tokens are not that grid."""
    if latent is None or tokens <= 0:
        return None
    height, width = latent
    downsample = math.ceil(math.sqrt(height * width // tokens))
    if not 1 <= downsample <= max_downsample:
        return None
    h, w = math.ceil(height / downsample), math.ceil(width / downsample)  # strided convs round up
    return (h, w) if h * w == tokens else None


def sd_blocks(unet: torch.nn.Module) -> list[BasicTransformerBlock]:
    """The Stable-Diffusion-style transformer blocks (layer norm, no positional embedding) of ``unet``."""
    return [m for m in unet.modules()
            if isinstance(m, BasicTransformerBlock) and m.norm_type == "layer_norm" and m.pos_embed is None]


def hook_all(patches: Patches, hooks: Iterable[tuple[torch.nn.Module, ModelHook]], name: str) -> list[torch.nn.Module]:
    """Register each hook as ``name`` on its module; returns the modules."""
    modules = []
    for module, hook in hooks:
        patches.hook(module, hook, name)
        modules.append(module)
    return modules


# ---------------------------------------------------------------------------------------------
# Bipartite soft matching.


def bipartite_soft_matching(metric: torch.Tensor, h: int, w: int, sx: int, sy: int, r: int,
                            generator: torch.Generator | None) -> tuple[Merge, Merge]:
    """Plan merging ``r`` of the ``h*w`` tokens of ``metric`` (B, N, C) into one destination per
    ``sy`` x ``sx`` cell (tomesd's ``bipartite_soft_matching_random2d``; one cell draw for the whole
    batch, the matching per sample).

    Returns:
        ``merge``: (B, N, C') -> (B, N - r, C'), mean of each destination and its sources;
        ``unmerge``: (B, N - r, C') -> (B, N, C'), each merged source gets its destination's value.
    """
    batch, tokens, _ = metric.shape
    device = metric.device
    with torch.no_grad():
        hsy, wsx = h // sy, w // sx
        num_dst = hsy * wsx
        if generator is None:
            pick = torch.zeros(hsy, wsx, 1, dtype=torch.int64, device=device)
        else:
            pick = torch.randint(sy * sx, (hsy, wsx, 1), generator=generator, device=generator.device).to(device)
        # -1 marks each cell's destination, 0 the sources (and the rows/columns no full cell covers)
        cells = torch.zeros(hsy, wsx, sy * sx, dtype=torch.int64, device=device).scatter_(2, pick, -1)
        marks = torch.zeros(h, w, dtype=torch.int64, device=device)
        marks[: hsy * sy, : wsx * sx] = cells.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
        order = marks.view(1, tokens, 1).argsort(dim=1, stable=True)  # (1, N, 1): destinations first
        dst_pos, src_pos = order[:, :num_dst], order[:, num_dst:]

        unit = metric / metric.norm(dim=-1, keepdim=True)
        channels = unit.shape[-1]
        a = unit.gather(1, src_pos.expand(batch, -1, channels))  # (B, Ns, C)
        b = unit.gather(1, dst_pos.expand(batch, -1, channels))  # (B, Nd, C)
        scores = a @ b.transpose(-1, -2)  # (B, Ns, Nd)
        r = min(r, a.shape[1])
        best, best_dst = scores.max(dim=-1)  # (B, Ns)
        ranked = best.argsort(dim=-1, descending=True, stable=True)[..., None]  # (B, Ns, 1)
        src_of = src_pos.expand(batch, -1, -1)
        kept_pos = src_of.gather(1, ranked[:, r:])  # (B, Ns - r, 1) positions in N
        moved_pos = src_of.gather(1, ranked[:, :r])  # (B, r, 1)
        kept = tokens - num_dst - r
        # rows of the merged tensor: the kept sources, then the destinations
        take = torch.cat([kept_pos, dst_pos.expand(batch, -1, -1)], dim=1)  # (B, N - r, 1) positions in N
        into = best_dst[..., None].gather(1, ranked[:, :r]) + kept  # (B, r, 1) row each moved source joins
        counts = torch.ones(batch, tokens - r, 1, dtype=metric.dtype, device=device)
        inv_counts = counts.scatter_add_(1, into, torch.ones_like(into, dtype=metric.dtype)).reciprocal_()
        rows = torch.arange(tokens - r, device=device).view(1, -1, 1).expand(batch, -1, -1)
        back = torch.empty(batch, tokens, 1, dtype=torch.int64, device=device)  # row of each position
        back.scatter_(1, take, rows).scatter_(1, moved_pos, into)

    # One gather and one scatter-add to merge, one gather to unmerge (tomesd: four gathers, a
    # scatter-reduce and a concatenation; an empty tensor, three scatters and a gather): same
    # values, half the memory traffic, which is most of ToMe's own cost next to the attention.
    def merge(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        out = x.gather(1, take.expand(-1, -1, c))
        out.scatter_add_(1, into.expand(-1, -1, c), x.gather(1, moved_pos.expand(-1, -1, c)))
        return out * inv_counts.to(out.dtype)  # (B, N - r, c): means of each destination and its sources

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, back.expand(-1, -1, x.shape[-1]))  # (B, N, c)

    return merge, unmerge


# ---------------------------------------------------------------------------------------------
# Hooks.


class _State:
    """Per pipeline: the latent size of the current call and the generators (one per device)."""

    def __init__(self, seed: int) -> None:
        self.size = LatentSize()
        self.seed = seed
        self.generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        gen = self.generators.get(device)
        if gen is None:
            try:
                gen = torch.Generator(device=device)
            except RuntimeError:  # a device type without its own generator: draw on the CPU
                gen = torch.Generator()
            gen.manual_seed(self.seed)
            self.generators[device] = gen
        return gen

    def reset(self) -> None:
        self.generators.clear()
        self.size.hw = None


class _Plan:
    """One block's merge plan for the call in progress (None: this call merges nothing)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.merge: Merge | None = None
        self.unmerge: Merge | None = None


class _BlockHook(ModelHook):
    """On a transformer block: plans the merge from the block's input."""

    def __init__(self, state: _State, plan: _Plan, config: ToMeConfig) -> None:
        super().__init__()
        self.state, self.plan, self.config = state, plan, config

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        x = args[0] if args else kwargs["hidden_states"]  # (B, N, C)
        cfg, plan = self.config, self.plan
        plan.merge = plan.unmerge = None
        grid = token_grid(x.shape[1], self.state.size.hw, cfg.max_downsample) if x.ndim == 3 else None
        r = int(x.shape[1] * cfg.ratio)
        if grid is not None and r > 0:
            gen = self.state.generator(x.device) if cfg.use_rand else None
            plan.tokens = x.shape[1]
            plan.merge, plan.unmerge = bipartite_soft_matching(x, *grid, cfg.sx, cfg.sy, r, gen)
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.plan.merge = self.plan.unmerge = None  # do not keep the indices alive between calls
        return output


class _MergeHook(ModelHook):
    """On attn1 / attn2 / ff of a block: runs it on the merged tokens and unmerges its output."""

    def __init__(self, plan: _Plan, self_attention: bool) -> None:
        super().__init__()
        self.plan, self.self_attention = plan, self_attention
        self.active = False

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        plan = self.plan
        x = args[0] if args else kwargs["hidden_states"]
        # a chunked feed-forward sees slices of the tokens, a masked self-attention needs them all
        self.active = (plan.merge is not None and x.shape[-2] == plan.tokens
                       and not (self.self_attention and kwargs.get("attention_mask") is not None))
        if self.active:
            assert plan.merge is not None
            if args:
                args = (plan.merge(x), *args[1:])
            else:
                kwargs = {**kwargs, "hidden_states": plan.merge(x)}
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        if not self.active:
            return output
        self.active = False
        assert self.plan.unmerge is not None
        return self.plan.unmerge(output)


class ToMeHandle:
    def __init__(self, patches: Patches, unet: torch.nn.Module, modules: list[torch.nn.Module], state: _State) -> None:
        self.patches, self.unet, self.modules, self.state = patches, unet, modules, state

    def reset(self) -> None:
        self.state.reset()

    def remove(self) -> None:
        self.patches.undo()
        self.state.reset()


@technique(ToMeConfig)
def apply_tome(pipe: Any, config: ToMeConfig) -> ToMeHandle:
    """Apply ToMe to ``pipe.unet``'s transformer blocks (instance hooks).

    Example:
        >>> handle = apply_tome(pipe, ToMeConfig(ratio=0.5))
        >>> handle.reset(); image = pipe("a red circle").images[0]
        >>> handle.remove()
    """
    unet = pipe.unet
    blocks = sd_blocks(unet)
    if not blocks:
        raise ValueError(f"ToMe found no Stable-Diffusion transformer block in {type(unet).__name__}")
    state = _State(config.seed)
    hooks: list[tuple[torch.nn.Module, ModelHook]] = [(unet, LatentSizeHook(state.size))]
    for block in blocks:
        plan = _Plan()
        hooks.append((block, _BlockHook(state, plan, config)))
        parts = [(block.attn1, config.merge_attn, True), (block.attn2, config.merge_crossattn, False),
                 (block.ff, config.merge_mlp, False)]
        hooks += [(part, _MergeHook(plan, self_attn)) for part, wanted, self_attn in parts
                  if wanted and part is not None]
    with patching(pipe, config) as patches:
        modules = hook_all(patches, hooks, HOOK)
    return ToMeHandle(patches, unet, modules[1:], state)
