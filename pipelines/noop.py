"""``noop``: a pipeline that returns blank images at once, with the step callbacks of a real one.
It measures the service's own overhead (queue, store, artifacts) without any model work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass
class NoopScheduler:
    pass


@dataclass
class _Output:
    images: list[Image.Image]


class NoopPipeline:
    def __init__(self) -> None:
        self.scheduler = NoopScheduler()
        self.components: dict[str, Any] = {}

    def to(self, *args: Any, **kwargs: Any) -> NoopPipeline:
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        pass

    def __call__(self, prompt: list[str], num_inference_steps: int = 1, height: int = 64, width: int = 64,
                 callback_on_step_end: Any = None, **kwargs: Any) -> _Output:
        for i in range(num_inference_steps):
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, i, {})
        return _Output([Image.new("RGB", (width, height)) for _ in prompt])
