"""Reference speech from espeak-ng, in process through libespeak-ng (ctypes): waveforms, IPA and
per-phoneme start times for sentences of a fixed vocabulary, several voices, speeds and pitches.

Why our own binding: the PyPI wrappers (``phonemizer``, ``py-espeak-ng``) either give IPA only or
shell out to the ``espeak-ng`` program per utterance (10x slower); the C API gives audio, IPA and
phoneme events in one call (1,260 utterances in 0.9 s here). libespeak-ng keeps global state, so
every call goes through one lock; ``Espeak`` is created once per process on first use.

The corpus is ``colour animal verb number`` (``"red cat jumps seven"``): 8 x 8 x 6 x 10 = 3,840
sentences, every word a slot the speech evaluator reads back (``genaccel.metrics.speech``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import random
import re
import threading
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 22050
"""espeak-ng's output rate."""

COLOURS = ("red", "green", "blue", "yellow", "white", "black", "brown", "pink")
ANIMALS = ("cat", "dog", "fish", "bird", "horse", "mouse", "sheep", "frog")
VERBS = ("jumps", "sleeps", "runs", "sits", "swims", "eats")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SLOTS: tuple[tuple[str, ...], ...] = (COLOURS, ANIMALS, VERBS, NUMBERS)
SLOT_NAMES = ("colour", "animal", "verb", "number")
VOCABULARY: tuple[str, ...] = tuple(w for slot in SLOTS for w in slot)

VOICES: dict[str, str] = {
    "us-male": "en-us+m3",
    "us-female": "en-us+f2",
    "gb-male": "en+m1",
    "gb-female": "en+f3",
    "scottish": "en-gb-scotland+m2",
    "caribbean": "en-029+f4",
}
"""Our voice names -> espeak-ng voice (+ variant)."""
EXTRA_VOICES: dict[str, str] = {
    "us-male-2": "en-us+m1", "us-female-2": "en-us+f4", "gb-male-2": "en+m4", "gb-female-2": "en+f1",
    "lancaster": "en-gb-x-gbclan+m5", "midlands": "en-gb-x-gbcwmd+f5", "caribbean-male": "en-029+m6",
    "scottish-female": "en-gb-scotland+f2",
}
"""More voices the word recogniser trains on (so it reads voices it never heard), never served."""
HELDOUT_VOICE = "rp-female"
HELDOUT_VOICES: dict[str, str] = {HELDOUT_VOICE: "en-gb-x-rp+f1"}
"""A voice no model or evaluator trains on (the evaluator is tested on it)."""
BASE_WPM = 175
"""espeak-ng's default rate; ``speed`` scales it."""

# espeak-ng C constants (speak_lib.h)
_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_EVENT_PHONEME, _EVENT_END = 7, 5


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakMissing(RuntimeError):
    """libespeak-ng is not installed (``apt-get install espeak-ng``)."""


@dataclass(frozen=True)
class Utterance:
    """One rendering: ``samples`` float32 mono at ``SAMPLE_RATE``; ``phonemes`` IPA symbols with
    their start times in seconds (``starts``), ending at ``duration_s``."""

    text: str
    voice: str
    speed: float
    pitch: int
    samples: np.ndarray
    phonemes: tuple[str, ...]
    starts: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def durations(self) -> np.ndarray:
        """Seconds each phoneme lasts (the next one's start, or the end)."""
        ends = np.array([*self.starts[1:], self.duration_s])
        return np.maximum(ends - np.array(self.starts), 0.0)


class Espeak:
    """The process's libespeak-ng, synchronous mode, phoneme events in IPA."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError:
            raise EspeakMissing("libespeak-ng is not installed; fix: apt-get install espeak-ng "
                                "(scripts/setup.sh does it when it can)") from None
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        rate = self.lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if rate != SAMPLE_RATE:
            raise EspeakMissing(f"libespeak-ng initialised at {rate} Hz, expected {SAMPLE_RATE}")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, float]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: ctypes.Array[ctypes.c_short], n: int, events: ctypes.Array[_Event]) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((bytes(ev.id.string).split(b"\0")[0].decode("utf-8", "replace"),
                                     ev.audio_position / 1000.0))
            i += 1
        return 0

    def _voice(self, voice: str) -> None:
        spec = {**VOICES, **EXTRA_VOICES, **HELDOUT_VOICES}.get(voice, voice)
        if self.lib.espeak_SetVoiceByName(spec.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {spec!r}")

    def synth(self, text: str, voice: str = "us-male", speed: float = 1.0, pitch: int = 50) -> Utterance:
        """Render ``text``; ``speed`` scales the rate (1 = 175 words per minute), ``pitch`` 0..99."""
        with self.lock:
            self._chunks, self._events = [], []
            self._voice(voice)
            self.lib.espeak_SetParameter(_PARAM_RATE, round(BASE_WPM * speed), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            data = text.encode()
            self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        samples = (pcm.astype(np.float32) / 32768.0)
        kept = [(p, t) for p, t in events if p and not p.isspace()]
        return Utterance(text, voice, speed, pitch, samples, tuple(p for p, _ in kept), tuple(t for _, t in kept))

    def ipa(self, text: str, voice: str = "us-male") -> str:
        """The IPA of ``text`` (clauses joined by spaces), as espeak-ng pronounces it."""
        with self.lock:
            self._voice(voice)
            buf = ctypes.c_char_p(text.encode())
            ptr = ctypes.pointer(buf)
            parts = []
            while ptr.contents.value:
                out = self.lib.espeak_TextToPhonemes(ptr, _CHARS_UTF8, 0x02)
                if out:
                    parts.append(out.decode("utf-8"))
            return " ".join(parts)


@functools.cache
def espeak() -> Espeak:
    """The process's espeak-ng handle (libespeak-ng is a process-wide C library)."""
    return Espeak()


def available() -> bool:
    try:
        espeak()
    except EspeakMissing:
        return False
    return True


def sentence(words: tuple[str, str, str, str]) -> str:
    return " ".join(words)


def all_sentences() -> list[tuple[str, str, str, str]]:
    return [(c, a, v, n) for c in COLOURS for a in ANIMALS for v in VERBS for n in NUMBERS]


def split_sentences(seed: int = 0, heldout: float = 0.1) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` sentences: a fixed tenth of the combinations is never trained on."""
    combos = all_sentences()
    random.Random(seed).shuffle(combos)
    cut = int(len(combos) * heldout)
    return [sentence(c) for c in combos[cut:]], [sentence(c) for c in combos[:cut]]


def parse_words(text: str) -> tuple[str, ...] | None:
    """The four slot words of a corpus sentence, or ``None`` when it is not one."""
    words = tuple(re.findall(r"[a-z]+", text.lower()))
    if len(words) != 4 or any(w not in slot for w, slot in zip(words, SLOTS, strict=True)):
        return None
    return words


@dataclass(frozen=True)
class Rendering:
    voice: str
    speed: float
    pitch: int


def renderings(voices: tuple[str, ...] = tuple(VOICES), speeds: tuple[float, ...] = (0.85, 1.0, 1.2),
               pitches: tuple[int, ...] = (35, 50, 65)) -> list[Rendering]:
    """Every (voice, speed, pitch) variation used for training data."""
    return [Rendering(v, s, p) for v in voices for s in speeds for p in pitches]


def render_corpus(texts: list[str], variations: list[Rendering], seed: int = 0, per_text: int = 1) -> list[Utterance]:
    """``per_text`` random variations of each text (seeded)."""
    rng = random.Random(seed)
    engine = espeak()
    out = []
    for text in texts:
        for r in rng.sample(variations, per_text):
            out.append(engine.synth(text, r.voice, r.speed, r.pitch))
    return out
