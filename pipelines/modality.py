"""The modality contract: what an adapter does for one kind of media, and the typed outputs it
returns. The runner, the request preparation, the artifact writers and the UI go through this
contract only, so a new modality is one adapter module (registered here), its family entries
(``genaccel/families.py``), its profile recipes and its UI fields; nothing else branches on it.

An adapter:

* ``prepare(request, info, settings)`` checks a request against a resolved model and returns
  every parameter made explicit (size, frames, duration, voice, format...), raising
  ``InvalidRequest`` naming field, value, limit and fix before anything is queued;
* ``generate(pipe, requests, hooks)`` runs one or several compatible requests (equal
  ``batch_key``) on a loaded pipeline, calling ``hooks.on_step`` after each step (it may raise to
  stop there) and ``hooks.on_latents`` where the pipeline exposes latents, and returns the
  outputs of each request as ``ImageOutput`` / ``VideoOutput`` / ``AudioOutput``;
* ``preview(pipe, latents, row)`` makes a small PNG data URL of a step's latents, or ``None``.

Adapters are looked up by name (``ModelInfo.adapter``, by default the model's modality), so one
modality can have several (speech: a single-pass model and a flow-matching one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from PIL import Image

from genaccel.errors import InvalidRequest, UnsupportedModality
from genaccel.settings import Settings
from genaccel.spec import JobRequest

if TYPE_CHECKING:
    from pipelines.registry import ModelInfo

StepCallback = Callable[[int, int], None]
"""``(step, total)`` after each step; raising stops the pipeline there (cancel, shutdown)."""
LatentsCallback = Callable[[int, int, Any], None]
"""``(step, total, latents)`` after a step, where the pipeline exposes its latents (previews)."""


@dataclass(frozen=True)
class ImageOutput:
    image: Image.Image


@dataclass(frozen=True)
class AudioOutput:
    """``samples``: float32 in [-1, 1], shape ``(n, channels)``."""

    samples: np.ndarray
    sample_rate: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """Adapter facts for the sidecar (speech: text, phonemes, voice)."""

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise ValueError(f"audio samples must be (n, channels), got shape {self.samples.shape}")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


@dataclass(frozen=True)
class VideoOutput:
    frames: list[Image.Image]
    fps: float
    audio: AudioOutput | None = None
    """Sound to mux into the clip, when the pipeline makes some."""

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps


Output = ImageOutput | VideoOutput | AudioOutput


@dataclass
class RunHooks:
    """What the runner lends an adapter for one call."""

    on_step: StepCallback
    on_latents: LatentsCallback | None = None
    on_chunk: Callable[[Any], None] | None = None
    """Part of an output ready before the whole (speech: ``pipelines.speech.SpeechChunk``, one per sentence)."""


class ModalityAdapter(Protocol):
    """One kind of media (see the module docstring)."""

    name: ClassVar[str]
    """Registry key; ``ModelInfo.adapter`` names it (default: the modality)."""
    modality: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    """Output formats it offers; the first is the default."""
    fields: ClassVar[tuple[str, ...]]
    """Flat request fields beyond prompt, steps, guidance, seed and num_outputs that it honours
    (the UI builds its advanced parameters from them)."""

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]: ...

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None: ...

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]: ...

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None: ...

    def serves(self, pipeline_class: str) -> bool:
        """Whether a diffusers pipeline folder of this class is one of this adapter's."""
        ...


@dataclass
class AdapterRegistry:
    adapters: dict[str, ModalityAdapter] = field(default_factory=dict)

    def register(self, adapter: ModalityAdapter) -> ModalityAdapter:
        self.adapters[adapter.name] = adapter
        return adapter

    def get(self, name: str) -> ModalityAdapter:
        _builtins()
        found = self.adapters.get(name)
        if found is None:
            raise UnsupportedModality("modality", name, f"no {name} pipeline is available in this version",
                                      f"use --modality {' or '.join(self.modalities()) or 'image'}")
        return found

    def modalities(self) -> list[str]:
        _builtins()
        return sorted({a.modality for a in self.adapters.values()})


ADAPTERS = AdapterRegistry()
"""The adapters of this process: the built-in ones (registered by ``pipelines.adapters``) and
those of ``Settings.plugins``."""


def _builtins() -> None:
    """Import the built-in adapters (each registers itself)."""
    import pipelines.image
    import pipelines.music
    import pipelines.speech
    import pipelines.video  # noqa: F401


def modality_of_class(pipeline_class: str) -> str | None:
    """The modality of a diffusers pipeline class some adapter serves (``None``: none does)."""
    _builtins()
    return next((a.modality for a in ADAPTERS.adapters.values() if a.serves(pipeline_class)), None)


def register_adapter(adapter: ModalityAdapter) -> ModalityAdapter:
    """Make ``adapter`` available to every registry, runner and UI of this process."""
    return ADAPTERS.register(adapter)


def adapter_for(info: ModelInfo) -> ModalityAdapter:
    """The adapter that runs ``info``'s requests."""
    return ADAPTERS.get(info.adapter or info.modality)


def served_modalities() -> list[str]:
    """Modalities some registered adapter serves."""
    return ADAPTERS.modalities()


def check_format(request: JobRequest, adapter: ModalityAdapter, default: str | None = None) -> str:
    """The request's output format, or the model's (``default``) or the adapter's default; refuses
    a format the adapter cannot write."""
    fmt = (request.params.output_format or default or adapter.formats[0]).lower()
    if fmt not in adapter.formats:
        raise InvalidRequest("output_format", fmt, f"{request.modality} outputs are written as "
                             f"{', '.join(adapter.formats)}", f"pass --format {adapter.formats[0]}")
    return fmt
