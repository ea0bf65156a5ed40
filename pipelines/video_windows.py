"""Clips longer than a fixed-length video DiT's window (Latte: its temporal position embedding has
one length), made window after window with a cache of past frames (ViD-GPT's idea, training-free).

Window ``k > 0`` starts where window ``k - 1`` ended: its first ``overlap`` latent frames are held
to the cached last ``overlap`` clean latent frames of the previous window. After every denoising
step they are replaced by those cached latents noised to the next step's level (fixed noise per
window, RePaint-style temporal inpainting), and after the last step by the cached latents
themselves, so the model's temporal attention reads the past frames as context and continues the
motion. The prompt (and its embeddings) is shared by every window. Each window decodes on its own;
the stitched clip is window 0's frames followed by every later window's new frames.

Written here because diffusers has sliding windows only for AnimateDiff (FreeNoise, which blends
windows of one clip sampled together); Latte is sampled in one fixed-length call, so longer clips
need windows sampled in turn. Progress counts every step of every window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the frame rules import this module, torch-free
    import torch


def window_count(frames: int, window: int, overlap: int) -> int:
    """Windows a clip of ``frames`` takes: 1, then one per ``window - overlap`` new frames (also
    FreeNoise's count, ``pipelines.video.windows``)."""
    if frames <= window:
        return 1
    return 1 + -(-(frames - window) // (window - overlap))


def valid_frames(frames: int, window: int, overlap: int) -> bool:
    """Windows tile the clip exactly: ``window + k * (window - overlap)`` frames."""
    return frames == window or (frames > window and (frames - window) % (window - overlap) == 0)


def noised(scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timestep: Any) -> torch.Tensor:
    """``clean`` at the noise level of ``timestep`` on ``scheduler``'s own schedule."""
    import torch

    t = torch.as_tensor(timestep).reshape(1)
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(clean, noise, t)  # type: ignore[no-any-return]
    return scheduler.scale_noise(clean, t, noise)  # type: ignore[no-any-return]  # flow matching


class _HeldFrames:
    """One window's step callback: holds its first ``overlap`` latent frames to the cached past
    ones (noised to each step's level), reports progress, keeps the final latents."""

    def __init__(self, past: torch.Tensor | None, overlap: int, generator: torch.Generator, done: int, total: int,
                 on_step: Callable[[int, int], None], on_latents: Callable[[int, int, Any], None] | None) -> None:
        self.past, self.overlap, self.generator = past, overlap, generator
        self.done, self.total, self.on_step, self.on_latents = done, total, on_step, on_latents
        self.noise: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def __call__(self, pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        import torch

        latents = tensors["latents"]
        if self.past is not None:
            if self.noise is None:
                self.noise = torch.randn(self.past.shape, generator=self.generator).to(latents)
            timesteps = pipeline.scheduler.timesteps
            latents = latents.clone()
            latents[:, :, :self.overlap] = (noised(pipeline.scheduler, self.past, self.noise, timesteps[i + 1])
                                            if i + 1 < len(timesteps) else self.past)
        self.last = latents
        self.on_step(self.done + i + 1, self.total)
        if self.on_latents is not None:
            self.on_latents(self.done + i + 1, self.total, latents)
        return {"latents": latents}


def long_clip(call: Callable[..., Any], kwargs: dict[str, Any], frames: int, window: int, overlap: int,
              generator: torch.Generator, on_step: Callable[[int, int], None],
              on_latents: Callable[[int, int, Any], None] | None = None) -> list[Any]:
    """The frames of a ``frames``-long clip from ``call`` (the pipeline's ``__call__``, wrapped
    by the request's techniques) with ``kwargs`` for one ``window``-frame call."""
    count = window_count(frames, window, overlap)
    steps = int(kwargs["num_inference_steps"])
    out: list[Any] = []
    past: torch.Tensor | None = None
    for w in range(count):
        held = _HeldFrames(past, overlap, generator, w * steps, count * steps, on_step, on_latents)
        result = call(**{**kwargs, "generator": generator, "callback_on_step_end": held,
                         "callback_on_step_end_tensor_inputs": ["latents"]})
        clip = list(result.frames[0])
        out += clip if w == 0 else clip[overlap:]
        assert held.last is not None
        past = held.last[:, :, -overlap:].detach().clone()
    return out[:frames]
