"""Audio evaluator for the music reference model: reads back every attribute a prompt names from
the audio alone, and says "none" for a clip that holds no melody.

* **notes**: YIN pitch per frame (``music_notes``); note accuracy is the share of notes in the
  prompt's key, the key is right when every note is in its scale and the melody starts (or, for
  a descending one, ends) on its tonic;
* **contour**: ascending, descending or arch, from the sign of the steps between notes;
* **tempo**: the median inter-onset interval, right within 5 % (and its word: slow, moderate,
  fast);
* **timbre**: a small classifier trained on the synthesiser (``train_timbre``, weights in
  ``assets/music-evaluator``) over harmonic-profile and envelope features;
* **exact match**: every named attribute right;
* **distances**: log-spectral distance between two clips (e.g. an accelerated output against the
  un-accelerated one of the same seed) and a Fréchet distance between two sets in the
  classifier's feature space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genaccel.metrics.music_notes import Note, read_notes, read_tempo
from genaccel.refdata.music import SCALES, TEMPO_WORDS, TIMBRES, TONICS, parse_caption

HARMONICS = 10
FEATURES = HARMONICS + 4
ASSET = Path(__file__).resolve().parents[2] / "assets" / "music-evaluator"


# -- prompt ---------------------------------------------------------------------------------

def named_attributes(prompt: str) -> dict[str, Any]:
    """What a prompt asks for: ``timbre``, ``key`` ("A minor"), ``bpm``, ``tempo_word``,
    ``contour`` (absent keys are not named); the data generator's own caption grammar."""
    return dict(parse_caption(prompt))


# -- reading a clip -------------------------------------------------------------------------


def read_contour(midis: list[int]) -> str | None:
    if len(midis) < 3:
        return None
    steps = np.sign(np.diff(midis))
    if (steps > 0).all():
        return "ascending"
    if (steps < 0).all():
        return "descending"
    peak = int(np.argmax(midis))
    if 0 < peak < len(midis) - 1 and (steps[:peak] > 0).all() and (steps[peak:] < 0).all():
        return "arch"
    return None


def in_key(midi: int, key: str) -> bool:
    tonic, mode = key.split()
    return (midi - TONICS.index(tonic)) % 12 in SCALES[mode]


def key_matches(midis: list[int], key: str, contour: str | None) -> bool:
    """Every note in the key's scale, and the melody anchored on its tonic: the first note (the
    last for a descending melody)."""
    if len(midis) < 2 or not all(in_key(m, key) for m in midis):
        return False
    tonic = TONICS.index(key.split()[0])
    anchors = [midis[-1]] if contour == "descending" else [midis[0]]
    if contour is None:
        anchors = [midis[0], midis[-1]]
    return any(a % 12 == tonic for a in anchors)


def timbre_features(audio: np.ndarray, sample_rate: int, notes: list[Note]) -> np.ndarray | None:
    """Harmonic profile (dB of harmonics 1..10 relative to the strongest, averaged over the
    notes' steady frames), odd/even balance, decay within notes, spectral flatness; ``None``
    without notes."""
    if not notes:
        return None
    x = np.asarray(audio, dtype=np.float64)
    n_fft, hop = 2048, 256
    window = np.hanning(n_fft)
    profiles, decays = [], []
    for note in notes:
        a, b = int(note.start * sample_rate), int(note.end * sample_rate)
        seg = x[a:b]
        if len(seg) < n_fft:
            continue
        frames = np.stack([seg[i:i + n_fft] * window for i in range(0, len(seg) - n_fft + 1, hop)])
        mag = np.abs(np.fft.rfft(frames, axis=1))
        f0 = 440.0 * 2 ** ((note.midi - 69) / 12)
        bins = np.round(np.arange(1, HARMONICS + 1) * f0 * n_fft / sample_rate).astype(int)
        ok = bins < mag.shape[1] - 2
        peak = np.zeros((mag.shape[0], HARMONICS))
        for k, bin_ in enumerate(bins):
            if ok[k]:
                peak[:, k] = mag[:, bin_ - 2:bin_ + 3].max(axis=1)
        spectrum = peak.mean(axis=0)
        db = 20 * np.log10(np.maximum(spectrum, 1e-9) / max(spectrum.max(), 1e-9))
        profiles.append(np.maximum(db, -60.0))
        energy = (frames**2).sum(axis=1)
        half = len(energy) // 2
        decays.append(10 * np.log10((energy[half:].mean() + 1e-12) / (energy[:max(1, half)].mean() + 1e-12)))
    if not profiles:
        return None
    profile = np.mean(profiles, axis=0)
    odd_even = profile[[2, 4, 6]].mean() - profile[[1, 3, 5]].mean()
    spec = np.abs(np.fft.rfft(x[: len(x) // n_fft * n_fft].reshape(-1, n_fft) * window, axis=1)) + 1e-9
    flatness = float(np.mean(np.exp(np.log(spec).mean(axis=1)) / spec.mean(axis=1)))
    return np.concatenate([profile / 20.0, [odd_even / 20.0, np.mean(decays) / 10.0, np.log10(flatness),
                                            len(notes) / 8.0]]).astype(np.float32)


@dataclass
class TimbreClassifier:
    """Softmax regression over standardised ``timbre_features`` (weights in a JSON file)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray  # (FEATURES, classes)
    bias: np.ndarray
    classes: tuple[str, ...] = TIMBRES

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std) @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> str:
        return self.classes[int(np.argmax(self.logits(features)))]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "timbre.json").write_text(json.dumps({
            "classes": list(self.classes), "mean": self.mean.tolist(), "std": self.std.tolist(),
            "weights": self.weights.tolist(), "bias": self.bias.tolist()}, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path = ASSET) -> TimbreClassifier:
        data = json.loads((folder / "timbre.json").read_text())
        return cls(np.array(data["mean"]), np.array(data["std"]), np.array(data["weights"]), np.array(data["bias"]),
                   tuple(data["classes"]))


def fit_timbre(features: np.ndarray, labels: np.ndarray, steps: int = 800, lr: float = 0.5,
               l2: float = 1e-3) -> TimbreClassifier:
    """Full-batch gradient descent on the softmax cross-entropy (seconds for a few thousand clips)."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    z = (features - mean) / std
    classes = len(TIMBRES)
    w, b = np.zeros((z.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[labels]
    for _ in range(steps):
        logits = z @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(z)
        w -= lr * (z.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return TimbreClassifier(mean, std, w, b)


@dataclass
class ClipReading:
    """What the evaluator read from one clip (``None``: nothing of that kind was found)."""

    notes: list[int]
    bpm: float | None
    contour: str | None
    timbre: str | None
    features: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"notes": self.notes, "bpm": None if self.bpm is None else round(self.bpm, 1),
                "contour": self.contour, "timbre": self.timbre}


class MusicEvaluator:
    """Scores clips against prompts (see the module docstring)."""

    def __init__(self, classifier: TimbreClassifier | None) -> None:
        self.classifier = classifier

    @classmethod
    def load(cls, folder: Path = ASSET) -> MusicEvaluator:
        return cls(TimbreClassifier.load(folder) if (folder / "timbre.json").is_file() else None)

    def read(self, audio: np.ndarray, sample_rate: int) -> ClipReading:
        x = np.asarray(audio, dtype=np.float32)
        x = x.mean(axis=1) if x.ndim == 2 else x
        notes = read_notes(x, sample_rate)
        pitched = len(notes) >= 2
        features = timbre_features(x, sample_rate, notes) if pitched else None
        timbre = self.classifier.predict(features) if self.classifier and features is not None else None
        midis = [n.midi for n in notes]
        return ClipReading(midis, read_tempo(notes), read_contour(midis), timbre, features)

    def score(self, audio: np.ndarray, sample_rate: int, prompt: str) -> dict[str, Any]:
        """Per named attribute: right or not; ``exact``: all of them; ``note_accuracy``: share
        of notes in the named key (``None`` without a key or notes)."""
        reading = self.read(audio, sample_rate)
        named = named_attributes(prompt)
        right: dict[str, bool] = {}
        if "timbre" in named:
            right["timbre"] = reading.timbre == named["timbre"]
        if "contour" in named:
            right["contour"] = reading.contour == named["contour"]
        if "key" in named:
            right["key"] = key_matches(reading.notes, named["key"], reading.contour)
        if "bpm" in named:
            right["bpm"] = reading.bpm is not None and abs(reading.bpm - named["bpm"]) <= 0.05 * named["bpm"]
        if "tempo_word" in named:
            lo, hi = TEMPO_WORDS[named["tempo_word"]]  # the word's range, with the same 5 % tolerance
            right["tempo_word"] = reading.bpm is not None and 0.95 * lo <= reading.bpm <= 1.05 * hi
        accuracy = None
        if "key" in named and reading.notes:
            accuracy = float(np.mean([in_key(m, named["key"]) for m in reading.notes]))
        return {"attributes": right, "exact": bool(right) and all(right.values()), "note_accuracy": accuracy,
                "read": reading.to_dict()}


# -- distances ------------------------------------------------------------------------------


def log_spectral_distance(a: np.ndarray, b: np.ndarray, n_fft: int = 1024, hop: int = 256) -> float:
    """Root-mean-square difference of log power spectra (dB), averaged over frames: 0 for equal
    clips, grows with any spectral difference."""
    n = min(len(a), len(b))
    window = np.hanning(n_fft)

    def power(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x[:n], dtype=np.float64).reshape(n, -1).mean(axis=1)
        frames = np.stack([x[i:i + n_fft] * window for i in range(0, max(1, n - n_fft + 1), hop)])
        return 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10)

    pa, pb = power(a), power(b)
    return float(np.mean(np.sqrt(np.mean((pa - pb) ** 2, axis=1))))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are clips)."""
    from scipy import linalg

    mx, my = x.mean(axis=0), y.mean(axis=0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root, _ = linalg.sqrtm(cx @ cy, disp=False)
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * np.real(root)))
