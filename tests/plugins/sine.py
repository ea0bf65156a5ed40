"""A minimal second modality for the contract tests: the ``sine-test`` model answers a music
request with a sine tone (440 Hz, or the note the prompt names, e.g. "a C5 tone"), one step per
tenth of a second so progress and cancel have something to act on.

It is loaded as a plugin (``GENACCEL_PLUGINS='["tests.plugins.sine"]'``), which is all a new
modality needs besides its family entries, profile recipes and UI fields.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np

from genaccel.artifacts import check_audio_format
from genaccel.errors import InvalidRequest
from genaccel.families import Family
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import AudioOutput, Output, RunHooks, check_format
from pipelines.registry import ModelDefaults, ModelInfo

NOTES = {"C": -9, "D": -7, "E": -5, "F": -4, "G": -2, "A": 0, "B": 2}


def frequency(prompt: str) -> float:
    """440 Hz, or the note named in ``prompt`` ("C5", "A4", "F#3")."""
    found = re.search(r"\b([A-G])(#?)(\d)\b", prompt)
    if not found:
        return 440.0
    semitones = NOTES[found[1]] + (1 if found[2] else 0) + 12 * (int(found[3]) - 4)
    return 440.0 * 2 ** (semitones / 12)


class SineScheduler:
    pass


class SinePipeline:
    sample_rate = 16000

    def __init__(self) -> None:
        self.scheduler = SineScheduler()
        self.components: dict[str, Any] = {}

    def to(self, *args: Any, **kwargs: Any) -> SinePipeline:
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        pass


class SineAdapter:
    name: ClassVar[str] = "sine"
    modality: ClassVar[str] = "music"
    formats: ClassVar[tuple[str, ...]] = ("wav", "flac", "mp3", "ogg")
    fields: ClassVar[tuple[str, ...]] = ("duration_s",)

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        d = info.defaults
        duration = request.params.duration_s or d.duration_s or 1.0
        if d.max_duration_s is not None and duration > d.max_duration_s:
            raise InvalidRequest("duration_s", duration, f"{info.name} makes at most {d.max_duration_s:g} s",
                                 f"pass --duration {d.max_duration_s:g} or less")
        fmt = check_format(request, self, d.output_format)
        check_audio_format(fmt, d.sample_rate or SinePipeline.sample_rate, d.channels or 1)
        return {"duration_s": duration, "output_format": fmt}

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return None

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        out = []
        for request in requests:
            p = request.params
            assert p.duration_s is not None and p.steps is not None
            for step in range(p.steps):
                hooks.on_step(step + 1, p.steps)
            t = np.arange(int(p.duration_s * pipe.sample_rate)) / pipe.sample_rate
            tone = 0.3 * np.sin(2 * np.pi * frequency(request.prompt) * t)
            out.append([AudioOutput(tone[:, None].astype(np.float32), pipe.sample_rate)
                        for _ in range(p.num_outputs)])
        return out

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        return None

    def serves(self, pipeline_class: str) -> bool:
        return pipeline_class == "SinePipeline"


def adapters() -> list[SineAdapter]:
    return [SineAdapter()]


def models() -> list[ModelInfo]:
    defaults = ModelDefaults(steps=4, guidance_scale=0.0, width=0, height=0, duration_s=1.0, max_duration_s=5.0,
                             sample_rate=SinePipeline.sample_rate, channels=1)
    return [ModelInfo("sine-test", "music", Family.OTHER, "builtin", "sine-test", "SinePipeline", defaults,
                      "a sine tone (contract tests)", SinePipeline, adapter="sine")]
