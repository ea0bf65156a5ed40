"""What each video family accepts, checked before a clip is queued: frame counts, sizes, the
motion context, whether an image is needed, and a memory estimate against the worker's budget.

Policy: an explicit ``num_frames``, ``width`` or ``height`` that breaks a family's rule is refused
with the nearest valid value in the fix (never silently changed, so the stored request is what
ran). A ``duration_s`` is turned into frames at the clip's fps and rounded **up** to the next
valid count for the family; the frames that ran are in the resolved request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genaccel.errors import InvalidRequest
from pipelines.video_windows import valid_frames

if TYPE_CHECKING:
    from genaccel.settings import Settings
    from pipelines.registry import ModelInfo


@dataclass(frozen=True)
class VideoKind:
    """The rules of one video pipeline family.

    Args:
        name: short family name used in messages (``Wan``, ``LTX``...).
        classes: diffusers pipeline classes of this family.
        frame_step: valid frame counts are ``k * frame_step + 1`` (1: any count).
        size_multiple: width and height must be multiples of this.
        image: ``"required"``, ``"optional"`` or ``"none"``: whether the pipeline takes an init image.
        context: frames one motion window covers (AnimateDiff); longer clips run in sliding windows.
        exact_frames: one call makes exactly the transformer's ``video_length`` frames (Latte's fixed
            temporal embedding); longer clips are windows of that length overlapping by half
            (``pipelines/video_windows.py``).
        prompt: whether the pipeline reads a prompt (Stable Video Diffusion does not).
    """

    name: str
    classes: tuple[str, ...]
    frame_step: int = 1
    size_multiple: int = 8
    image: str = "none"
    context: int | None = None
    exact_frames: bool = False
    prompt: bool = True


KINDS: tuple[VideoKind, ...] = (
    VideoKind("Wan", ("WanPipeline",), frame_step=4, size_multiple=16),
    VideoKind("Wan image-to-video", ("WanImageToVideoPipeline",), frame_step=4, size_multiple=16, image="required"),
    VideoKind("LTX", ("LTXPipeline",), frame_step=8, size_multiple=32),
    VideoKind("LTX image-to-video", ("LTXImageToVideoPipeline",), frame_step=8, size_multiple=32, image="required"),
    VideoKind("AnimateDiff", ("AnimateDiffPipeline",), size_multiple=8, context=16),
    VideoKind("Latte", ("LattePipeline",), size_multiple=16, exact_frames=True),
    VideoKind("CogVideoX", ("CogVideoXPipeline",), frame_step=4, size_multiple=16),
    VideoKind("CogVideoX image-to-video", ("CogVideoXImageToVideoPipeline",), frame_step=4, size_multiple=16,
              image="required"),
    VideoKind("Stable Video Diffusion", ("StableVideoDiffusionPipeline",), image="required", prompt=False),
    VideoKind("text-to-image then Wan image-to-video", ("TextImageToVideoPipeline",), frame_step=4,
              size_multiple=16, image="optional"),
)
VIDEO_CLASSES: frozenset[str] = frozenset(c for k in KINDS for c in k.classes)


def kind_for(info: ModelInfo) -> VideoKind:
    """The rules of a served video model: its class's, or for an ``IMAGE+VIDEO`` pair its video
    model's, with the image optional (the image model draws it when the request brings none)."""
    if info.stages is not None:
        video = kind_of(info.stages[1].pipeline_class)
        return replace(video, name=f"text-to-image then {video.name}", image="optional")
    return kind_of(info.pipeline_class)


def kind_of(pipeline_class: str) -> VideoKind:
    """The rules of a video pipeline class (``KeyError``: not one of the families here)."""
    for kind in KINDS:
        if pipeline_class in kind.classes:
            return kind
    raise KeyError(pipeline_class)


def nearest_frames(frames: int, step: int, up: bool = False) -> int:
    """The valid count ``k * step + 1`` nearest ``frames`` (the next one up with ``up``)."""
    k = (frames - 1) / step
    return int((math.ceil(k) if up else max(0, round(k))) * step + 1)


def nearest_size(value: int, multiple: int) -> int:
    """The multiple of ``multiple`` nearest ``value`` (at least ``multiple``)."""
    return max(multiple, round(value / multiple) * multiple)


def model_configs(info: ModelInfo) -> dict[str, dict[str, Any]]:
    """``{"transformer"|"unet"|"vae": config}`` of a model, from its folder or (built-in models)
    from building it once; used by the rules and the memory estimate without loading weights."""
    if info.stages is not None:  # an IMAGE+VIDEO pair: the video stage is the one that counts
        return model_configs(info.stages[1])
    if info.builder is not None:
        return _built_configs(info.name, info.builder)
    out = {}
    for part in ("transformer", "unet", "vae"):
        try:
            out[part] = json.loads((Path(info.location) / part / "config.json").read_text())
        except (OSError, ValueError):
            continue
    return out


@lru_cache(maxsize=32)
def _built_configs(name: str, builder: Any) -> dict[str, dict[str, Any]]:
    pipe = builder()
    pipe = getattr(pipe, "video", pipe)  # text-to-image-then-video: the video stage is the one that counts
    return {part: dict(getattr(pipe, part).config) for part in ("transformer", "unet", "vae")
            if getattr(pipe, part, None) is not None}


def check_frames(kind: VideoKind, info: ModelInfo, frames: int | None, duration: float | None,
                 fps: float) -> int:
    """The frame count to run: the request's (checked), else from its duration (rounded up to a
    valid count), else the model's default."""
    fixed = fixed_frames(kind, info)
    if frames is not None and duration is not None:
        raise InvalidRequest("duration_s", duration, "was given together with num_frames",
                             "pass --frames or --duration, not both")
    if frames is None and duration is not None:
        frames = max(1, math.ceil(duration * fps))
        if fixed is None and kind.frame_step > 1:
            frames = nearest_frames(frames, kind.frame_step, up=True)
        elif fixed is not None:
            frames = windowed_frames(frames, fixed, up=True)
        return frames
    if frames is None:
        return fixed or info.defaults.num_frames or (kind.context or 2 * kind.frame_step) + 1
    if fixed is not None and not valid_frames(frames, fixed, window_overlap(fixed)):
        hop = fixed - window_overlap(fixed)
        raise InvalidRequest("num_frames", frames, f"{info.name} ({kind.name}) makes {fixed} frames a window (its "
                             f"temporal position embedding has that length); longer clips are windows overlapping "
                             f"by {fixed - hop}: {fixed}, {fixed + hop}, {fixed + 2 * hop}, ... frames",
                             f"pass --frames {windowed_frames(frames, fixed)}")
    if kind.frame_step > 1 and (frames - 1) % kind.frame_step:
        near = nearest_frames(frames, kind.frame_step)
        raise InvalidRequest("num_frames", frames, f"{kind.name} makes {kind.frame_step}k+1 frames (1, "
                             f"{kind.frame_step + 1}, {2 * kind.frame_step + 1}, ...)", f"pass --frames {near}")
    return frames


def window_overlap(window: int) -> int:
    """Frames a window of a fixed-length model shares with the one before it (half, at least 1)."""
    return max(1, window // 2)


def windowed_frames(frames: int, window: int, up: bool = False) -> int:
    """The valid count ``window + k * hop`` nearest ``frames`` (the next one up with ``up``)."""
    hop = window - window_overlap(window)
    k = max(0.0, (frames - window) / hop)
    return int(window + (math.ceil(k) if up else round(k)) * hop)


def fixed_frames(kind: VideoKind, info: ModelInfo) -> int | None:
    """The frames one call of a fixed-length model makes (Latte), or ``None`` when it makes many."""
    if not kind.exact_frames:
        return None
    length = model_configs(info).get("transformer", {}).get("video_length")
    return int(length) if length else info.defaults.num_frames


def check_size(kind: VideoKind, width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value % kind.size_multiple:
            raise InvalidRequest(name, value, f"{kind.name} needs sizes in multiples of {kind.size_multiple}",
                                 f"pass --{name} {nearest_size(value, kind.size_multiple)}")


def estimate_bytes(info: ModelInfo, frames: int, width: int, height: int, guidance: float) -> int:
    """Peak activation memory of one clip, roughly: the VAE decoding every frame at its widest
    layer, plus the denoiser's attention over all latent tokens (the scores materialised, as
    CPU attention does) and hidden states. Weights are the model cache's budget, not this."""
    configs = model_configs(info)
    vae = configs.get("vae", {})
    widest = max(vae.get("block_out_channels") or vae.get("decoder_block_out_channels") or [128])
    base_dim = vae.get("base_dim")  # Wan's VAE names its width differently
    if base_dim:
        widest = max(widest if "block_out_channels" in vae else 0, base_dim * max(vae.get("dim_mult", [4])))
    decode = frames * width * height * widest * 4 * 3
    den = configs.get("transformer") or configs.get("unet") or {}
    heads = int(den.get("num_attention_heads") or 8) if not isinstance(den.get("num_attention_heads"), list) else 8
    dim = heads * int(den.get("attention_head_dim") or 64) if not isinstance(den.get("attention_head_dim"), list) \
        else 320
    tokens = max(1, frames // (4 if frames > 1 else 1)) * (width // 16) * (height // 16)
    rows = 2 if guidance > 1 else 1
    attention = rows * heads * tokens * tokens * 4 + rows * tokens * dim * 4 * 12
    return int(decode + attention)


def memory_budget(settings: Settings) -> float:
    """Bytes one job's activations may use: ``Settings.job_memory_gb``, else the GPU's memory,
    else 60% of the machine's RAM."""
    if settings.job_memory_gb:
        return settings.job_memory_gb * 2**30
    import torch

    if torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(0).total_memory)
    import psutil

    return 0.6 * psutil.virtual_memory().total


def check_memory(info: ModelInfo, frames: int, width: int, height: int, guidance: float,
                 settings: Settings) -> None:
    need, budget = estimate_bytes(info, frames, width, height, guidance), memory_budget(settings)
    if need > budget:
        gb = 2**30
        raise InvalidRequest("num_frames", frames, f"a {frames}-frame {width}x{height} clip needs about "
                             f"{need / gb:.2f} GB of activations, above this worker's {budget / gb:.2f} GB budget",
                             "lower --frames, --width or --height (or raise GENACCEL_JOB_MEMORY_GB on a "
                             "larger worker)")
