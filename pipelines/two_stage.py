"""Text-to-image, then image-to-video (the Magic 1-For-1 recipe): an image model draws the first
frame from the prompt, and an image-to-video model animates it. Splitting the task this way lets
each model do what it is good at, and the image stage is cheap next to the video stage.

``TextImageToVideoPipeline`` holds the two loaded pipelines. The video adapter runs it as one
job: progress counts the image steps and then the video steps against one total, and a request
that brings its own ``init_image`` skips the image stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image


class TextImageToVideoPipeline:
    """An image pipeline and an image-to-video pipeline run one after the other."""

    def __init__(self, image: Any, video: Any) -> None:
        self.image, self.video = image, video
        self.scheduler = video.scheduler
        self.components: dict[str, Any] = {}

    def to(self, *args: Any, **kwargs: Any) -> TextImageToVideoPipeline:
        self.image, self.video = self.image.to(*args, **kwargs), self.video.to(*args, **kwargs)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        self.image.set_progress_bar_config(**kwargs)
        self.video.set_progress_bar_config(**kwargs)

    def first_frame(self, prompt: str, negative: str | None, steps: int, guidance: float, width: int, height: int,
                    generator: torch.Generator, on_step: Callable[[int], None]) -> Image.Image:
        """Draw the first frame; ``on_step(done)`` after each image step."""
        def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1)
            return tensors

        kwargs: dict[str, Any] = {
            "prompt": prompt, "negative_prompt": negative or "", "num_inference_steps": steps,
            "guidance_scale": guidance, "width": width, "height": height, "generator": generator,
            "output_type": "pil", "use_resolution_binning": False, "clean_caption": False,
        }
        accepted = set(inspect.signature(self.image.__call__).parameters)
        if "callback_on_step_end" in accepted:
            kwargs["callback_on_step_end"] = step_end
        else:  # pipelines with the old callback API (PixArt-α)
            kwargs.update(callback=lambda i, t, latents: on_step(i + 1), callback_steps=1)
        out = self.image(**{k: v for k, v in kwargs.items() if k in accepted})
        return out.images[0].convert("RGB")  # type: ignore[no-any-return]


def build_tiny_text_image_to_video(seed: int = 0) -> TextImageToVideoPipeline:
    """``tiny-dit`` draws the first frame and ``tiny-wan-i2v`` animates it."""
    from pipelines.tiny import build_tiny_dit
    from pipelines.tiny_video import build_tiny_wan_i2v

    return TextImageToVideoPipeline(build_tiny_dit(seed), build_tiny_wan_i2v(seed))
