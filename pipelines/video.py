"""Video adapter: text-to-video and image-to-video on diffusers video pipelines (Wan 2.x, LTX-Video,
AnimateDiff, Latte, CogVideoX, Stable Video Diffusion), checked per family before queueing
(``pipelines/video_rules.py``) and written as MP4/WebM/GIF with a poster and sidecar.

Each output is its own pipeline call with its own generator (seed, seed+1, ...), so a clip
depends on its seed only. AnimateDiff clips longer than the motion modules' 16-frame context run
in FreeNoise sliding windows (diffusers' ``enable_free_noise``: overlapping windows with shared
noise, blended where they overlap), switched off again after the call. Clips longer than a
fixed-length model's window (Latte) are made window after window, each continuing the cached last
frames of the one before (``pipelines/video_windows.py``); progress counts steps across windows.
"""

from __future__ import annotations

import base64
import inspect
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from PIL import Image

from genaccel.accel.base import call_wrappers
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import AudioOutput, Output, RunHooks, VideoOutput, check_format, register_adapter
from pipelines.two_stage import TextImageToVideoPipeline
from pipelines.video_rules import (
    VIDEO_CLASSES,
    check_frames,
    check_memory,
    check_size,
    fixed_frames,
    kind_for,
    kind_of,
    window_overlap,
)
from pipelines.video_windows import long_clip, window_count

if TYPE_CHECKING:
    from pipelines.registry import ModelInfo

DEFAULT_FPS = 8.0
WINDOW_STRIDE = 4
"""FreeNoise: windows of the motion context start every this many frames."""
PREVIEW_FRAMES = 4
PREVIEW_SIDE = 64


def windows(frames: int, context: int | None, stride: int = WINDOW_STRIDE) -> int:
    """Sliding windows a clip of ``frames`` runs in (1 when it fits one context)."""
    return 1 if context is None else window_count(frames, context, context - stride)


class VideoAdapter:
    """Text-to-video and image-to-video on diffusers video pipelines."""

    name: ClassVar[str] = "video"
    modality: ClassVar[str] = "video"
    formats: ClassVar[tuple[str, ...]] = ("mp4", "webm", "gif")
    fields: ClassVar[tuple[str, ...]] = ("negative_prompt", "width", "height", "init_image", "num_frames", "fps",
                                         "duration_s")

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        p, d = request.params, info.defaults
        kind = kind_for(info)
        if kind.image == "required" and p.init_image is None:
            raise InvalidRequest("init_image", None, f"{info.name} ({kind.name}) makes a clip from an image",
                                 "pass --init IMAGE (the first frame), or use a text-to-video model")
        if kind.image == "none" and p.init_image is not None:
            raise InvalidRequest("init_image", p.init_image, f"{info.name} ({kind.name}) is text-to-video only",
                                 "drop --init, or use an image-to-video model such as tiny-wan-i2v")
        if p.strength is not None:
            raise InvalidRequest("strength", p.strength, "does not apply to video (the image is the first frame)",
                                 "drop --strength")
        width, height = p.width or d.width, p.height or d.height
        check_size(kind, width, height)
        fps = p.fps or d.fps or DEFAULT_FPS
        frames = check_frames(kind, info, p.num_frames, p.duration_s, fps)
        if d.max_duration_s is not None and frames / fps > d.max_duration_s:
            most = int(d.max_duration_s * fps)
            raise InvalidRequest("num_frames", frames, f"{frames} frames at {fps:g} fps last {frames / fps:g} s, and "
                                 f"{info.name} makes at most {d.max_duration_s:g} s",
                                 f"pass --frames {most} or fewer, or a higher --fps")
        if frames > settings.limits.frames_max:
            raise InvalidRequest("num_frames", frames, f"must be at most {settings.limits.frames_max}",
                                 f"pass --frames {settings.limits.frames_max} or fewer")
        guidance = p.guidance_scale if p.guidance_scale is not None else d.guidance_scale
        window = kind.context or fixed_frames(kind, info) or frames  # longer clips run window by window
        check_memory(info, min(frames, window), width, height, guidance, settings)
        return {
            "width": width, "height": height, "num_frames": frames, "fps": fps, "duration_s": None,
            "init_image": str(Path(p.init_image).expanduser().resolve()) if p.init_image else None,
            "output_format": check_format(request, self, d.output_format),
        }

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return None  # one clip per call: a clip depends on its own seed only

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        return [self._request(pipe, r, hooks) for r in requests]

    def _request(self, pipe: Any, request: JobRequest, hooks: RunHooks) -> list[Output]:
        p = request.params
        assert p.seed is not None and p.steps is not None and p.num_frames is not None and p.fps is not None
        n = p.num_outputs
        outputs: list[Output] = []
        for i in range(n):
            def on_step(step: int, total: int, i: int = i) -> None:
                hooks.on_step(i * total + step, n * total)

            def on_latents(step: int, total: int, latents: Any, i: int = i) -> None:
                if hooks.on_latents is not None and i == 0:
                    hooks.on_latents(step, total, latents)

            gen = torch.Generator("cpu").manual_seed((p.seed + i) % 2**32)
            outputs.append(self._clip(pipe, request, gen, on_step, on_latents))
        return outputs

    def _clip(self, pipe: Any, request: JobRequest, gen: torch.Generator, on_step: Any, on_latents: Any) -> VideoOutput:
        p = request.params
        assert p.num_frames is not None and p.fps is not None and p.steps is not None
        first: Image.Image | None = None
        if isinstance(pipe, TextImageToVideoPipeline):  # the first frame from the prompt, unless given
            stages = 1 if p.init_image else 2
            total = stages * p.steps
            if not p.init_image:
                first = pipe.first_frame(request.prompt, request.negative_prompt, p.steps, p.guidance_scale or 0.0,
                                         p.width or 0, p.height or 0, gen, lambda done: on_step(done, total))
                on_step = _shifted(on_step, p.steps, total)
            pipe = pipe.video
        kind = kind_of(type(pipe).__name__)
        accepted = set(inspect.signature(pipe.__call__).parameters)
        kwargs: dict[str, Any] = {
            "prompt": request.prompt if kind.prompt else None, "num_inference_steps": p.steps,
            "guidance_scale": p.guidance_scale, "generator": gen, "output_type": "pil",
            "height": p.height, "width": p.width, "num_frames": p.num_frames,
            "negative_prompt": request.negative_prompt if kind.prompt else None,
        }
        window = int(getattr(getattr(pipe, "transformer", None), "config", {}).get("video_length") or 0)
        if "video_length" in accepted:  # Latte: one call makes its window; longer clips are windows in turn
            kwargs.update(video_length=min(p.num_frames, window or p.num_frames), clean_caption=False)
        if "max_sequence_length" in accepted:  # never longer than the tokenizer reads
            limit = getattr(getattr(pipe, "tokenizer", None), "model_max_length", None)
            default = inspect.signature(pipe.__call__).parameters["max_sequence_length"].default
            if isinstance(limit, int) and isinstance(default, int) and limit < default:
                kwargs["max_sequence_length"] = limit
        if "fps" in accepted:  # Stable Video Diffusion conditions on it
            kwargs["fps"] = max(1, round(p.fps))
        if "decode_chunk_size" in accepted:
            kwargs["decode_chunk_size"] = min(p.num_frames, 8)
        if p.init_image:
            kwargs["image"] = load_init_image(p.init_image, p.width or 0, p.height or 0)
        elif first is not None:
            kwargs["image"] = first
        if kind.name == "Stable Video Diffusion":  # its guidance is a ramp from min to max
            kwargs.pop("guidance_scale")
            kwargs.update(min_guidance_scale=1.0, max_guidance_scale=max(1.0, p.guidance_scale or 1.0))

        def total_steps() -> int:
            return int(getattr(pipe, "_num_timesteps", 0) or p.steps or 0)

        def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = total_steps()
            on_step(i + 1, total)
            if "latents" in tensors:
                on_latents(i + 1, total, tensors["latents"])
            return tensors

        if "callback_on_step_end" in accepted:
            kwargs["callback_on_step_end"] = step_end
            if "callback_on_step_end_tensor_inputs" in accepted:
                kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        kwargs = {k: v for k, v in kwargs.items() if k in accepted and v is not None}
        call = pipe.__call__
        for wrap in call_wrappers(pipe):
            call = wrap(call)
        if kind.exact_frames and window and p.num_frames > window:
            kwargs = {k: v for k, v in kwargs.items() if not k.startswith("callback_on_step_end")}
            frames = long_clip(call, kwargs, p.num_frames, window, window_overlap(window), gen, on_step, on_latents)
            return VideoOutput([f.convert("RGB") for f in frames], p.fps, None)
        slide = kind.context is not None and p.num_frames > kind.context and hasattr(pipe, "enable_free_noise")
        tick = None
        if slide:
            pipe.enable_free_noise(context_length=kind.context, context_stride=WINDOW_STRIDE)
            tick = _count_windows(pipe, windows(p.num_frames, kind.context), on_step, p.steps)
            if tick is not None:
                on_step = tick.step_end
        try:
            result = call(**kwargs)
        finally:
            if tick is not None:
                tick.handle.remove()
            if slide:
                pipe.disable_free_noise()
        frames = [f.convert("RGB") for f in result.frames[0]]
        return VideoOutput(frames, p.fps, _audio(result, pipe))

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        return frames_preview(latents, row)

    def serves(self, pipeline_class: str) -> bool:
        return pipeline_class in VIDEO_CLASSES


class _WindowTicks:
    """FreeNoise runs every window inside each step of one call: the first FreeNoise block's
    self-attention runs once per window, so counting its calls gives progress by window."""

    def __init__(self, module: Any, count: int, on_step: Any, steps: int) -> None:
        self.count, self.on_step, self.steps, self.done = count, on_step, steps, 0
        self.handle = module.register_forward_hook(self._window)

    def _window(self, *_: Any) -> None:
        self.done += 1
        if self.done % self.count:  # the window that ends a step is reported by the step callback
            self.on_step(self.done, self.steps * self.count)

    def step_end(self, step: int, total: int) -> None:
        self.done = step * self.count
        self.on_step(self.done, total * self.count)


def _count_windows(pipe: Any, count: int, on_step: Any, steps: int) -> _WindowTicks | None:
    from diffusers.models.attention import FreeNoiseTransformerBlock

    first = next((m for m in pipe.unet.modules() if isinstance(m, FreeNoiseTransformerBlock)), None)
    return _WindowTicks(first.attn1, count, on_step, steps) if first is not None else None


def _shifted(on_step: Any, offset: int, total: int) -> Any:
    """The video stage's step callback after ``offset`` image steps, against the two stages' total."""
    def shifted(step: int, _: int) -> None:
        on_step(offset + step, total)
    return shifted


def load_init_image(path: str, width: int, height: int) -> Image.Image:
    """The first frame, resized to the clip's size (checked readable before queueing; a file that
    changed since is a clear failure, not a crash in the pipeline)."""
    try:
        with Image.open(path) as img:
            image = img.convert("RGB")
    except OSError as exc:
        raise InvalidRequest("init_image", path, f"is not a readable image ({exc})",
                             "pass a PNG, JPEG or WebP image") from None
    return image.resize((width or image.width, height or image.height))


def _audio(result: Any, pipe: Any) -> AudioOutput | None:
    """Sound returned with the frames (LTX-2 style ``.audio``), as ``(n, channels)`` float32."""
    audio = getattr(result, "audio", None)
    if audio is None:
        return None
    data = audio[0] if isinstance(audio, (list, tuple)) or getattr(audio, "ndim", 0) == 3 else audio
    samples = np.asarray(data.float().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float32)
    samples = samples.T if samples.ndim == 2 and samples.shape[0] <= 2 else samples.reshape(-1, 1)
    rate = int(getattr(getattr(pipe, "vocoder", None), "config", {}).get("sampling_rate", 24000))
    return AudioOutput(np.clip(samples, -1, 1), rate)


def frames_preview(latents: Any, row: int) -> str | None:
    """A strip of a few frames of ``latents[row]`` (batch, channels, frames, h, w) as a PNG data
    URL, coloured from the first three latent channels: a glimpse of layout and motion at no
    decoding cost (video VAEs decode whole clips, far too slow for a preview)."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or row >= latents.shape[0]:
        return None
    clip = latents[row, :3].float().cpu()  # (3, F, h, w)
    if clip.shape[0] < 3:
        clip = clip[:1].expand(3, *clip.shape[1:])
    low, high = clip.amin(dim=(1, 2, 3), keepdim=True), clip.amax(dim=(1, 2, 3), keepdim=True)
    clip = ((clip - low) / (high - low).clamp_min(1e-6) * 255).round().byte()
    count = clip.shape[1]
    picks = sorted({round(i * (count - 1) / max(1, PREVIEW_FRAMES - 1)) for i in range(PREVIEW_FRAMES)})
    side = (PREVIEW_SIDE, PREVIEW_SIDE)
    tiles = [Image.fromarray(clip[:, f].permute(1, 2, 0).numpy()).resize(side, Image.Resampling.NEAREST) for f in picks]
    strip = Image.new("RGB", (PREVIEW_SIDE * len(tiles), PREVIEW_SIDE))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * PREVIEW_SIDE, 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


register_adapter(VideoAdapter())
