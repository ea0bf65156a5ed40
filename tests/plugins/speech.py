"""A fake speech model, kept for the OpenAI-compatible speech tests that need a controllable one:
``speech-test`` answers a speech request with one short beep per word (220 Hz for voice ``low``,
660 Hz for ``high``), shortened by ``speed``; each step sleeps a hundredth of a second per word,
so a synchronous wait can run out (or the client hang up) and cancel it at a step; a text with the
word "explode" fails the job. Its adapter records no sentences as it goes, so it also stands for a
plugin's speech adapter that does not stream (its stream is one piece). Everything else runs on
the real speech models (``tiny-vits``, ``tiny-speech-ref``).

Loaded as a plugin (``GENACCEL_PLUGINS='["tests.plugins.speech"]'``).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from genaccel.artifacts import check_audio_format
from genaccel.errors import InvalidRequest
from genaccel.families import Family
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import AudioOutput, Output, RunHooks, check_format
from pipelines.registry import ModelDefaults, ModelInfo

VOICES = {"low": 220.0, "high": 660.0}
WORD_S, GAP_S = 0.08, 0.04
STEP_S = 0.01


class FakeSpeechPipeline:
    sample_rate = 16000

    def __init__(self) -> None:
        self.scheduler = object()
        self.components: dict[str, Any] = {}

    def to(self, *args: Any, **kwargs: Any) -> FakeSpeechPipeline:
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        pass


def beeps(text: str, voice: str, speed: float, rate: int) -> np.ndarray:
    """One beep per word, then a gap: ``(n, 1)`` float32."""
    word = np.arange(int(WORD_S / speed * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * VOICES[voice] * word)
    gap = np.zeros(int(GAP_S / speed * rate))
    parts = [np.concatenate([tone, gap]) for _ in text.split()] or [gap]
    return np.concatenate(parts)[:, None].astype(np.float32)


class FakeSpeechAdapter:
    name: ClassVar[str] = "test-speech"
    modality: ClassVar[str] = "speech"
    formats: ClassVar[tuple[str, ...]] = ("wav", "flac")  # mp3 is re-encoded by the speech route
    fields: ClassVar[tuple[str, ...]] = ("voice", "speed")

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        voices = info.defaults.voices
        voice = request.params.voice or voices[0]
        if voice not in voices:
            raise InvalidRequest("voice", voice, f"{info.name} has the voices {', '.join(voices)}",
                                 f"pass --voice {voices[0]}")
        fmt = check_format(request, self, info.defaults.output_format)
        check_audio_format(fmt, FakeSpeechPipeline.sample_rate, 1)
        return {"voice": voice, "speed": request.params.speed or 1.0, "output_format": fmt}

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return None

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        out = []
        for request in requests:
            p = request.params
            assert p.steps is not None and p.voice is not None and p.speed is not None
            for step in range(p.steps):
                time.sleep(STEP_S * max(1, len(request.prompt.split())))  # like a real model: longer text, longer
                hooks.on_step(step + 1, p.steps)
            if "explode" in request.prompt:
                raise RuntimeError("the fake speech model exploded (as asked)")
            samples = beeps(request.prompt, p.voice, p.speed, pipe.sample_rate)
            out.append([AudioOutput(samples, pipe.sample_rate) for _ in range(p.num_outputs)])
        return out

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        return None

    def serves(self, pipeline_class: str) -> bool:
        return pipeline_class == "FakeSpeechPipeline"


def adapters() -> list[FakeSpeechAdapter]:
    return [FakeSpeechAdapter()]


def models() -> list[ModelInfo]:
    defaults = ModelDefaults(steps=2, guidance_scale=0.0, width=0, height=0, sample_rate=FakeSpeechPipeline.sample_rate,
                             channels=1, voices=tuple(VOICES), max_duration_s=60.0)
    return [ModelInfo("speech-test", "speech", Family.OTHER, "builtin", "speech-test", "FakeSpeechPipeline", defaults,
                      "a beep per word (OpenAI-compatible speech tests)", FakeSpeechPipeline, adapter="test-speech")]
