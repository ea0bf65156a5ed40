"""A fake video model for the OpenAI-compatible video tests: ``video-test`` answers a video
request with frames of one colour whose brightness rises frame by frame (red when the prompt
says "red", else blue), sleeping a hundredth of a second per step so a synchronous wait can run
out and cancel it at a step.

Loaded as a plugin (``GENACCEL_PLUGINS='["tests.plugins.video"]'``); the real video adapters go
through the same endpoints.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from PIL import Image

from genaccel.families import Family
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import Output, RunHooks, VideoOutput, check_format
from pipelines.registry import ModelDefaults, ModelInfo

STEP_S = 0.01


class FakeVideoPipeline:
    def __init__(self) -> None:
        self.scheduler = object()
        self.components: dict[str, Any] = {}

    def to(self, *args: Any, **kwargs: Any) -> FakeVideoPipeline:
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        pass


def frames(prompt: str, n: int, width: int, height: int) -> list[Image.Image]:
    red = "red" in prompt.lower()
    out = []
    for i in range(n):
        level = 64 + (191 * i) // max(1, n - 1)
        out.append(Image.new("RGB", (width, height), (level, 0, 0) if red else (0, 0, level)))
    return out


class FakeVideoAdapter:
    name: ClassVar[str] = "test-video"
    modality: ClassVar[str] = "video"
    formats: ClassVar[tuple[str, ...]] = ("mp4", "webm", "gif")
    fields: ClassVar[tuple[str, ...]] = ("width", "height", "num_frames", "fps")

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        p, d = request.params, info.defaults
        return {"width": p.width or d.width, "height": p.height or d.height, "num_frames": p.num_frames or d.num_frames,
                "fps": p.fps or d.fps, "output_format": check_format(request, self, d.output_format)}

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return None

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        out = []
        for request in requests:
            p = request.params
            assert p.steps and p.num_frames and p.fps and p.width and p.height
            for step in range(p.steps):
                time.sleep(STEP_S)
                hooks.on_step(step + 1, p.steps)
            clip = frames(request.prompt, p.num_frames, p.width, p.height)
            out.append([VideoOutput(clip, p.fps) for _ in range(p.num_outputs)])
        return out

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        return None

    def serves(self, pipeline_class: str) -> bool:
        return pipeline_class == "FakeVideoPipeline"


def adapters() -> list[FakeVideoAdapter]:
    return [FakeVideoAdapter()]


def models() -> list[ModelInfo]:
    defaults = ModelDefaults(steps=2, guidance_scale=0.0, width=32, height=32, num_frames=8, fps=8.0)
    return [ModelInfo("video-test", "video", Family.OTHER, "builtin", "video-test", "FakeVideoPipeline", defaults,
                      "frames of one colour (OpenAI-compatible video tests)", FakeVideoPipeline, adapter="test-video")]
