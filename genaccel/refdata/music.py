"""Deterministic synthesised melodies with captions: the music reference model's data.

Each clip is one melody of quarter notes on a beat grid, played by one additive-synthesis timbre
(flute, clarinet, strings, plucked string), in one key and mode, at one tempo (60-120 bpm), with
one melodic contour (ascending, descending, arch), 16 kHz mono, 4 s. A :class:`MelodySpec` holds
the attributes; :func:`caption` writes the full sentence ("a slow ascending flute melody in A
minor at 72 bpm") and :func:`caption_variant` the shorter ones users type, naming fewer
attributes. :func:`parse_caption` reads back which attributes a prompt names, so the evaluator
can score exactly those.

We synthesise instead of using recorded music because every attribute of every clip must be
known exactly (the evaluator's ground truth) and because the data must render here, offline, in
seconds.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16_000
CLIP_SECONDS = 4.0
TIMBRES: tuple[str, ...] = ("flute", "clarinet", "strings", "plucked")
INSTRUMENT_WORDS: dict[str, str] = {"flute": "flute", "clarinet": "clarinet", "strings": "strings",
                                    "plucked": "plucked string"}
TONICS: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES: tuple[str, ...] = ("major", "minor")
CONTOURS: tuple[str, ...] = ("ascending", "descending", "arch")
TEMPO_RANGE: tuple[int, int] = (60, 120)
TEMPO_WORDS: dict[str, tuple[int, int]] = {"slow": (60, 79), "moderate": (80, 99), "fast": (100, 120)}
SCALES: dict[str, tuple[int, ...]] = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
ATTRIBUTES: tuple[str, ...] = ("timbre", "key", "tempo", "contour")
BASE_MIDI = 60  # the tonic sits in the octave from C4


@dataclass(frozen=True)
class MelodySpec:
    """Attributes of one clip; values are canonical names (tempo in bpm)."""

    timbre: str
    tonic: str
    mode: str
    bpm: int
    contour: str

    @property
    def key(self) -> str:
        return f"{self.tonic} {self.mode}"

    @property
    def tempo_word(self) -> str:
        return tempo_word(self.bpm)

    def notes(self, seconds: float = CLIP_SECONDS) -> list[int]:
        """MIDI numbers of the melody's notes, one per beat."""
        return melody_notes(self.tonic, self.mode, self.contour, note_count(self.bpm, seconds))

    def caption(self) -> str:
        return caption(self)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def tempo_word(bpm: float) -> str:
    for word, (lo, hi) in TEMPO_WORDS.items():
        if lo <= round(bpm) <= hi:
            return word
    return "slow" if bpm < TEMPO_RANGE[0] else "fast"


def note_count(bpm: float, seconds: float = CLIP_SECONDS) -> int:
    return max(2, int(seconds * bpm / 60.0 + 1e-6))


def scale_midi(tonic: str, mode: str, degree: int) -> int:
    """MIDI number of scale ``degree`` (0 = tonic, 7 = tonic an octave up) of tonic/mode."""
    steps = SCALES[mode]
    octave, idx = divmod(degree, len(steps))
    return BASE_MIDI + TONICS.index(tonic) + 12 * octave + steps[idx]


def contour_degrees(contour: str, count: int) -> list[int]:
    """Scale degrees in step motion: ascending from the tonic, descending to it, arch from the
    tonic up and back."""
    if contour == "ascending":
        return list(range(count))
    if contour == "descending":
        return list(range(count - 1, -1, -1))
    if contour == "arch":
        peak = (count - 1) // 2 + (count - 1) % 2
        up = list(range(peak + 1))
        return up + list(range(peak - 1, peak - 1 - (count - len(up)), -1))
    raise ValueError(f"unknown contour {contour!r}")


def melody_notes(tonic: str, mode: str, contour: str, count: int) -> list[int]:
    return [scale_midi(tonic, mode, d) for d in contour_degrees(contour, count)]


def midi_hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69) / 12))


def _harmonics(timbre: str, f0: float) -> np.ndarray:
    """Relative amplitudes of harmonics 1..n (band-limited below 7.5 kHz)."""
    n = max(1, min(16, int(7500 // f0)))
    k = np.arange(1, n + 1, dtype=np.float64)
    if timbre == "flute":
        amps = np.array([1.0, 0.32, 0.11, 0.05, 0.02, 0.01])
    elif timbre == "clarinet":
        amps = np.where(k % 2 == 1, 1.0 / k, 0.04 / k)
    elif timbre == "strings":
        amps = 1.0 / k
    elif timbre == "plucked":
        amps = 1.0 / k**1.1
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    out = np.zeros(n)
    out[: min(n, len(amps))] = amps[:n]
    return out


def _envelope(timbre: str, t: np.ndarray, length: float) -> np.ndarray:
    """Amplitude envelope of one note (attack, sustain or decay, release) at times ``t`` (s)."""
    attack = {"flute": 0.04, "clarinet": 0.025, "strings": 0.09, "plucked": 0.003}[timbre]
    release = 0.03
    env = np.clip(t / attack, 0.0, 1.0)
    if timbre == "plucked":
        env = env * np.exp(-t / 0.35)
    elif timbre == "strings":
        env = env * (0.85 + 0.15 * np.exp(-t / 0.2))
    return env * np.clip((length - t) / release, 0.0, 1.0)


def render_note(timbre: str, midi: int, length: float, rng: np.random.Generator,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One note of ``length`` seconds: a sum of harmonics with the timbre's envelope, vibrato
    (flute, strings), per-harmonic decay (plucked) and breath noise (flute)."""
    t = np.arange(int(length * sample_rate)) / sample_rate
    f0 = midi_hz(midi)
    vib_depth = {"flute": 0.004, "strings": 0.006}.get(timbre, 0.0)
    vib = 1.0 + vib_depth * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * t) * np.clip(t / 0.25, 0, 1)
    phase = 2 * np.pi * f0 * np.cumsum(vib) / sample_rate
    amps = _harmonics(timbre, f0)
    out = np.zeros_like(t)
    for k, a in enumerate(amps, start=1):
        if a == 0.0:
            continue
        partial = a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        if timbre == "plucked":
            partial *= np.exp(-t * 1.2 * (k - 1))
        out += partial
    if timbre == "flute":
        noise = rng.standard_normal(len(t))
        out += 0.03 * np.convolve(noise, np.ones(8) / 8, mode="same")
    out *= _envelope(timbre, t, length)
    return out / max(1e-9, float(np.abs(amps).sum()))


def render(spec: MelodySpec, seed: int, seconds: float = CLIP_SECONDS,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip of ``spec``: float32 mono samples in [-1, 1], ``seconds`` long."""
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    out = np.zeros(total, dtype=np.float64)
    beat = 60.0 / spec.bpm
    for i, midi in enumerate(spec.notes(seconds)):
        start = round(i * beat * sample_rate)
        if start >= total:
            break
        note = render_note(spec.timbre, midi, beat * 0.88, rng, sample_rate)
        end = min(total, start + len(note))
        out[start:end] += note[: end - start] * rng.uniform(0.85, 1.0)
    peak = float(np.abs(out).max()) or 1.0
    return (out / peak * rng.uniform(0.5, 0.8)).astype(np.float32)


def random_spec(rng: np.random.Generator) -> MelodySpec:
    return MelodySpec(
        timbre=TIMBRES[int(rng.integers(len(TIMBRES)))], tonic=TONICS[int(rng.integers(len(TONICS)))],
        mode=MODES[int(rng.integers(len(MODES)))], bpm=int(rng.integers(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1)),
        contour=CONTOURS[int(rng.integers(len(CONTOURS)))],
    )


def make_dataset(count: int, seed: int, seconds: float = CLIP_SECONDS) -> tuple[np.ndarray, list[MelodySpec]]:
    """``count`` clips (N, samples) float32 and their specs; the same seed gives the same clips."""
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng) for _ in range(count)]
    clips = np.stack([render(s, seed * 1_000_003 + i, seconds) for i, s in enumerate(specs)])
    return clips, specs


# -- captions ---------------------------------------------------------------------------------


def caption(spec: MelodySpec, named: tuple[str, ...] = ATTRIBUTES, tempo_as: str = "both") -> str:
    """The caption naming ``named`` attributes. ``tempo_as``: "word" (slow), "bpm" (at 72 bpm)
    or "both"."""
    words: list[str] = []
    if "tempo" in named and tempo_as in ("word", "both"):
        words.append(spec.tempo_word)
    if "contour" in named:
        words.append(spec.contour)
    words.append(INSTRUMENT_WORDS[spec.timbre] + " melody" if "timbre" in named else "melody")
    if "key" in named:
        words.append(f"in {spec.key}")
    if "tempo" in named and tempo_as in ("bpm", "both"):
        words.append(f"at {spec.bpm} bpm")
    head = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([head, *words])


def caption_variant(spec: MelodySpec, rng: np.random.Generator) -> str:
    """A caption naming a random non-empty subset of the attributes (the full one a third of the
    time), with the tempo as a word, a bpm, or both."""
    if rng.random() < 1 / 3:
        named = ATTRIBUTES
    else:
        mask = rng.random(len(ATTRIBUTES)) < 0.5
        if not mask.any():
            mask[int(rng.integers(len(ATTRIBUTES)))] = True
        named = tuple(a for a, m in zip(ATTRIBUTES, mask, strict=True) if m)
    tempo_as = ("word", "bpm", "both")[int(rng.integers(3))]
    return caption(spec, named, tempo_as)


_KEY_RE = re.compile(r"\b([a-g]#?)\s+(major|minor)\b")
_BPM_RE = re.compile(r"\b(\d{2,3})\s*bpm\b")
_TIMBRE_WORDS = {"flute": "flute", "clarinet": "clarinet", "plucked": "plucked", "strings": "strings",
                 "string": "strings"}


def parse_caption(text: str) -> dict[str, object]:
    """The attributes a prompt names: ``timbre``, ``key`` ("A minor"), ``bpm`` (int),
    ``tempo_word``, ``contour``; absent keys are not named."""
    low = text.lower()
    out: dict[str, object] = {}
    for word in re.findall(r"[a-z]+", low):  # the first instrument named ("plucked strings": plucked)
        if word in _TIMBRE_WORDS and "timbre" not in out:
            out["timbre"] = "plucked" if "plucked" in low.split() else _TIMBRE_WORDS[word]
    key = _KEY_RE.search(low)
    if key:
        out["key"] = f"{key.group(1).upper()} {key.group(2)}"
    bpm = _BPM_RE.search(low)
    if bpm:
        out["bpm"] = int(bpm.group(1))
    for word in TEMPO_WORDS:
        if re.search(rf"\b{word}\b", low):
            out["tempo_word"] = word
    for contour in CONTOURS:
        if re.search(rf"\b{contour}\b", low):
            out["contour"] = contour
    return out


def caption_words() -> list[str]:
    """Every word a caption can hold (one tokenizer piece each)."""
    words = {"a", "an", "melody", "in", "at", "bpm", "string", *TIMBRES, *MODES, *CONTOURS, *TEMPO_WORDS}
    words |= {t.lower() for t in TONICS}
    words |= {str(b) for b in range(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1)}
    return sorted(words)
