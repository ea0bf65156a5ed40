"""Speech adapter: one request shape (text = prompt, voice, speed, seed, steps, output format) over
every ``SpeechModel`` (``pipelines.speech_models``: VITS, FastSpeech 2, LongCat AudioDiT, and
genaccel's ``speech-ref``).

A text is split into sentences; each is synthesised on its own and handed to ``on_chunk`` as soon
as it is ready (streaming), then the sentences are joined with a short equal-power crossfade so
the seams do not click. The sidecar of every output holds the text, its phonemes and every
parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from genaccel.artifacts import check_audio_format
from genaccel.errors import InvalidRequest, ModelNotAvailable
from genaccel.families import Family
from genaccel.refdata.speech import available as espeak_available
from genaccel.refdata.speech import espeak
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import AudioOutput, Output, RunHooks, check_format, register_adapter
from pipelines.speech_models import TEXT_ALPHABET, SpeechModel

if TYPE_CHECKING:
    from pipelines.registry import ModelInfo

MAX_TEXT_CHARS = 1000
"""Longest text one speech request reads (about a minute of speech)."""
SPEED_RANGE = (0.5, 2.0)
"""Speaking rates the speech models are asked for (1 = the voice's own)."""
CROSSFADE_S = 0.01
"""Seam between sentences: 10 ms equal-power crossfade."""
_SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]*")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (at ``. ! ? ;`` and line breaks), stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip(" .!?;\n")]


def outside_alphabet(text: str, alphabet: frozenset[str]) -> list[tuple[int, str]]:
    """``(position, character)`` of every character the model cannot read."""
    return [(i, ch) for i, ch in enumerate(text) if ch not in alphabet]


def crossfade_join(parts: list[np.ndarray], sample_rate: int, fade_s: float = CROSSFADE_S) -> np.ndarray:
    """Concatenate mono clips, overlapping each seam by ``fade_s`` with an equal-power crossfade."""
    if not parts:
        return np.zeros(0, np.float32)
    out = np.asarray(parts[0], np.float32)
    for part in parts[1:]:
        nxt = np.asarray(part, np.float32)
        n = min(int(fade_s * sample_rate), len(out), len(nxt))
        if n == 0:
            out = np.concatenate([out, nxt])
            continue
        ramp = np.linspace(0, np.pi / 2, n, dtype=np.float32)
        seam = out[-n:] * np.cos(ramp) + nxt[:n] * np.sin(ramp)
        out = np.concatenate([out[:-n], seam, nxt[n:]])
    return out


@dataclass(frozen=True)
class SpeechChunk:
    """One sentence's audio, as soon as it is ready."""

    index: int
    total: int
    text: str
    audio: AudioOutput
    step: int
    """Steps done over the whole text when this sentence was ready (of ``total_steps``)."""
    total_steps: int


ChunkCallback = Callable[[SpeechChunk], None]


def synthesize_stream(model: SpeechModel, text: str, voice: str, speed: float, steps: int, seed: int,
                      on_step: Callable[[int, int], None] | None = None) -> Iterator[SpeechChunk]:
    """Sentence by sentence: yields each sentence's audio as soon as it is made.

    ``on_step(done, total)`` counts steps over the whole text (it may raise to stop). One
    generator seeded with ``seed`` runs through the sentences in order, so the same request gives
    the same audio whether or not it is streamed.

    Example:
        >>> for chunk in synthesize_stream(model, "red cat jumps seven. blue dog sits two.", "us-male", 1.0, 8, 0):
        ...     play(chunk.audio.samples)
    """
    sentences = split_sentences(text) or [text.strip()]
    generator = torch.Generator("cpu").manual_seed(seed % 2**32)
    per = steps if model.iterative else 1
    total = per * len(sentences)
    for k, sentence in enumerate(sentences):
        def step(i: int, n: int, k: int = k) -> None:
            if on_step is not None:
                on_step(k * per + min(i, per), total)

        wav = model.synthesize(sentence, voice, speed, steps, generator, step)
        yield SpeechChunk(k, len(sentences), sentence, AudioOutput(wav.astype(np.float32)[:, None], model.sample_rate),
                          (k + 1) * per, total)


def synthesize(model: SpeechModel, text: str, voice: str, speed: float, steps: int, seed: int,
               on_step: Callable[[int, int], None] | None = None,
               on_chunk: ChunkCallback | None = None) -> AudioOutput:
    """The whole text, sentences joined by crossfades; ``on_chunk`` sees each sentence first."""
    parts = []
    for chunk in synthesize_stream(model, text, voice, speed, steps, seed, on_step):
        if on_chunk is not None:
            on_chunk(chunk)
        parts.append(chunk.audio.samples[:, 0])
    return AudioOutput(crossfade_join(parts, model.sample_rate)[:, None], model.sample_rate)


class SpeechAdapter:
    """Text to speech on any ``SpeechModel``."""

    name: ClassVar[str] = "speech"
    modality: ClassVar[str] = "speech"
    formats: ClassVar[tuple[str, ...]] = ("wav", "flac", "mp3")
    fields: ClassVar[tuple[str, ...]] = ("voice", "speed")

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        p, d = request.params, info.defaults
        text = request.prompt
        if not espeak_available():
            raise ModelNotAvailable(f"model {info.name!r} reads text through espeak-ng, which is not installed "
                                    "here; fix: apt-get install espeak-ng (scripts/setup.sh does it when it can)")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRequest("prompt", f"{text[:40]}...", f"speech text must have at most {MAX_TEXT_CHARS} "
                                 f"characters (got {len(text)})", "split the text into several requests")
        voices = d.voices or ("default",)
        voice = p.voice or voices[0]
        if voice not in voices:
            raise InvalidRequest("voice", voice, f"{info.name} has no such voice", f"use one of: {', '.join(voices)}")
        if p.steps is not None and p.steps != 1 and info.family == Family.OTHER:
            raise InvalidRequest("steps", p.steps, f"{info.name} makes speech in one pass", "drop --steps")
        speed = p.speed if p.speed is not None else 1.0
        low, high = SPEED_RANGE
        if not low <= speed <= high:
            raise InvalidRequest("speed", speed, f"must be between {low:g} and {high:g} for speech models",
                                 f"pass --speed between {low:g} and {high:g} (1 is the voice's own)")
        fmt = check_format(request, self, d.output_format)
        check_audio_format(fmt, d.sample_rate or 22050, 1)
        check_text(info, text, voice)
        return {"voice": voice, "speed": speed, "output_format": fmt}

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return None

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        out: list[list[Output]] = []
        for request in requests:
            p = request.params
            assert p.seed is not None and p.steps is not None and p.voice and p.speed is not None
            meta = {"text": request.prompt, "phonemes": pipe.phonemes(request.prompt, p.voice),
                    "sentences": split_sentences(request.prompt), "voice": p.voice, "speed": p.speed,
                    "steps": p.steps if pipe.iterative else 1}
            outputs: list[Output] = []
            for i in range(p.num_outputs):
                audio = synthesize(pipe, request.prompt, p.voice, p.speed, p.steps, p.seed + i, hooks.on_step,
                                   hooks.on_chunk if i == 0 else None)
                outputs.append(AudioOutput(audio.samples, audio.sample_rate, meta={"speech": meta}))
            out.append(outputs)
        return out

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        return None

    def serves(self, pipeline_class: str) -> bool:
        return pipeline_class in SPEECH_CLASSES


def check_text(info: ModelInfo, text: str, voice: str) -> None:
    """Characters the model cannot read, by position; sounds it never learnt, by word."""
    bad = outside_alphabet(text, TEXT_ALPHABET)
    if bad:
        where = ", ".join(f"{ch!r} at {i}" for i, ch in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise InvalidRequest("prompt", text[:60], f"has {len(bad)} character(s) outside {info.name}'s alphabet "
                             f"(letters, digits, space and . , ! ? ; : ' \" -): {where}",
                             "spell those characters out in words, or remove them")
    inventory = phoneme_inventory(info)
    if inventory is None:
        return
    for word in re.findall(r"[A-Za-z0-9']+", text):
        found = next((ph for ph in espeak().synth(word, voice).phonemes if ph not in inventory), None)
        if found is not None:
                raise InvalidRequest("prompt", word, f"{info.name} was never trained on the sound {found!r} "
                                     f"(in the word {word!r})", "use words of the model's corpus "
                                     "(see docs/speech.md)")


def phoneme_inventory(info: ModelInfo) -> frozenset[str] | None:
    """The sounds a ``speech-ref`` model knows (``None``: the model reads any espeak-ng IPA)."""
    if info.pipeline_class != "SpeechRefModel":
        return None
    from pathlib import Path

    from pipelines.speech_ref import SpeechRefConfig, corpus_phonemes

    config = Path(info.location) / "config.json"
    return frozenset(SpeechRefConfig.load(config).phonemes if config.is_file() else corpus_phonemes())


SPEECH_CLASSES = frozenset({"VitsSpeech", "FastSpeech2Speech", "LongCatSpeech", "SpeechRefModel"})

register_adapter(SpeechAdapter())
