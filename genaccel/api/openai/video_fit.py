"""How OpenAI's ``seconds``, ``size`` and ``input_reference`` land on a real video model's rules
(``pipelines/video_rules.py``), before the job is queued.

OpenAI's clients send a few fixed durations (``"4"``, ``"8"``, ``"12"``) and sizes (``720x1280``...)
that a model's frame and size rules rarely match, so this surface fits them the way the video
adapter fits a ``--duration``: ``seconds`` becomes frames at the clip's fps, rounded **up** to the
family's next valid count (Wan and CogVideoX 4k+1, LTX 8k+1); ``size`` is rounded to the nearest
multiple the family needs (16, LTX 32). A fixed-length model (Latte) makes longer clips from
overlapping windows, so its counts are ``window + k * hop``. Each rounding is a warning in the
header. What cannot be made is a 400 naming ``seconds``, ``size`` or ``input_reference``: a clip
past the model's or the server's length limit, an image for a text-to-video model, no image for an
image-to-video one. Models of other adapters (plugins) get
``seconds`` as frames at their fps and ``size`` as given.
"""

from __future__ import annotations

import io
import re

from PIL import Image, UnidentifiedImageError

from genaccel.api.openai.errors import OpenAIError, invalid
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from pipelines.registry import ModelInfo
from pipelines.video_rules import VideoKind, check_frames, fixed_frames, kind_for, nearest_size, window_overlap


def video_kind(info: ModelInfo) -> VideoKind | None:
    """The family rules of a built-in video adapter's model; ``None`` for another adapter's."""
    if info.adapter not in (None, "video"):
        return None
    try:
        return kind_for(info)
    except KeyError:
        return None


def fit_seconds(kind: VideoKind, info: ModelInfo, seconds: float, fps: float, settings: Settings,
                warnings: list[str]) -> int:
    """The frames ``seconds`` makes on ``info`` at ``fps`` (rounded up to a valid count, warned)."""
    frames = check_frames(kind, info, None, seconds, fps)
    fixed = fixed_frames(kind, info)
    most = settings.limits.frames_max
    if info.defaults.max_duration_s is not None:
        most = min(most, int(info.defaults.max_duration_s * fps))
    if kind.frame_step > 1:
        most = (most - 1) // kind.frame_step * kind.frame_step + 1
    if frames > most:
        raise invalid("seconds", f"seconds={seconds:g} needs {frames} frames at {fps:g} fps, and {info.name} makes "
                                 f"at most {most} frames ({most / fps:g} s) here; fix: pass seconds={most / fps:g} or "
                                 "less (or a lower fps in extra_body)")
    if abs(frames - seconds * fps) > 1e-6:
        rule = f"{kind.name} makes {kind.frame_step}k+1 frames" if kind.frame_step > 1 else "whole frames"
        if fixed is not None:
            hop = fixed - window_overlap(fixed)
            rule = f"{kind.name} makes {fixed} + {hop}k frames (windows of {fixed} overlapping by {fixed - hop})"
        warnings.append(f"seconds={seconds:g} rounded up to {frames} frames ({frames / fps:g} s at {fps:g} fps): "
                        f"{rule}")
    return frames


def fit_size(kind: VideoKind, width: int, height: int, warnings: list[str]) -> tuple[int, int]:
    """``width`` x ``height`` rounded to the family's multiple (warned when changed)."""
    step = kind.size_multiple
    fitted = nearest_size(width, step), nearest_size(height, step)
    if fitted != (width, height):
        warnings.append(f"size={width}x{height} rounded to {fitted[0]}x{fitted[1]}: {kind.name} makes sizes in "
                        f"multiples of {step}")
    return fitted


def check_reference(kind: VideoKind, info: ModelInfo, given: bool) -> None:
    """Refuse an ``input_reference`` a text-to-video model cannot use, or its absence where one is needed."""
    if given and kind.image == "none":
        raise invalid("input_reference", f"{info.name} ({kind.name}) is text-to-video only and takes no "
                                         "input_reference; fix: drop input_reference, or pick an image-to-video "
                                         "model (such as tiny-wan-i2v) from GET /openai/v1/models",
                      "unsupported_parameter")
    if not given and kind.image == "required":
        raise invalid("input_reference", f"{info.name} ({kind.name}) makes a clip from an image; fix: send "
                                         "input_reference (the first frame) as a multipart file",
                      "missing_required_parameter")


def reference_size(raw: bytes, size: tuple[int, int], warnings: list[str]) -> None:
    """Refuse bytes that are not an image; warn when the image is resized to the clip's size."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            found = img.size
    except (UnidentifiedImageError, OSError):
        raise invalid("input_reference", "input_reference is not a readable image; fix: send a PNG, JPEG or "
                                         "WebP file") from None
    if found != size:
        warnings.append(f"input_reference {found[0]}x{found[1]} resized to the clip's {size[0]}x{size[1]}")


VIDEO_PARAMS = {"init_image": "input_reference", "num_frames": "seconds", "duration_s": "seconds",
                "width": "size", "height": "size", "width*height": "size"}
"""The adapter's field names as this endpoint's parameters (``error.param``)."""
FLAG = re.compile(r"--([a-z][a-z-]*)(?: (\d[\d.]*|IMAGE))?")
FLAG_NAMES = {"frames": ("seconds", "num_frames"), "duration": ("seconds", "seconds"), "width": ("size", "width"),
              "height": ("size", "height"), "size": ("size", "size"), "init": ("input_reference", "input_reference"),
              "guidance": ("guidance_scale", "guidance_scale")}
"""A CLI flag in the adapter's fixes as this endpoint's parameter: alone, and with a value."""


def _flag(found: re.Match[str]) -> str:
    alone, named = FLAG_NAMES.get(found[1], (found[1], found[1]))
    value = found[2]
    if value is None or value == "IMAGE":
        return alone
    return f"a size with {named} {value}" if alone == "size" else f"{named}={value}"


def as_openai(exc: InvalidRequest) -> OpenAIError:
    """One of the adapter's refusals in this endpoint's words: its parameter named as the client
    sent it, and the fix's CLI flags (``--frames 9``) as parameters (``num_frames=9``)."""
    fix = FLAG.sub(_flag, exc.fix.replace("--width or --height", "--size"))
    message = exc.message.removesuffix(exc.fix) + fix
    return OpenAIError(400, message, param=VIDEO_PARAMS.get(exc.field, exc.field), code=exc.code)
