"""Speech evaluator: reads back the words and the voice of generated speech, and compares its
timing and sound with espeak-ng's rendering of the same text.

* Words: a small CNN over the trimmed, time-normalised log-mel reads the four slots of a corpus
  sentence (``colour animal verb number``, ``genaccel.refdata.speech``); exact match = all four
  right, so it can say "none" (a wrong or unintelligible sentence scores 0).
* Voice: the same network with one head over the corpus voices.
* Timing: relative duration error of the voiced part against espeak-ng's rendering.
* Distance: MFCC-DTW distance to that rendering (mean frame cost on the warping path).
* Speed: real-time factor = compute seconds / audio seconds.

Our own because no packaged recogniser works offline on a 32-word vocabulary at this size; the
weights are trained here on espeak-ng audio (``scripts/train_speech_evaluator.py``) and tested on
a voice held out of training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genaccel.refdata.mel import FRAMES_PER_S, SAMPLE_RATE, log_mel
from genaccel.refdata.speech import SLOT_NAMES, SLOTS, VOICES

FRAMES = 96
"""Every utterance is resampled to this many mel frames after trimming silence."""
TRIM_DB = 40.0
ASSET = Path(__file__).resolve().parents[2] / "assets" / "speech-evaluator"


def trim(mel: torch.Tensor, below_db: float = TRIM_DB) -> torch.Tensor:
    """``(N_MELS, T)`` -> the frames between the first and last one within ``below_db`` of the loudest."""
    energy = torch.logsumexp(mel, dim=0)  # (T,) natural log
    keep = torch.nonzero(energy > energy.max() - below_db / 20 * np.log(10)).flatten()
    if len(keep) == 0:
        return mel
    return mel[:, int(keep[0]): int(keep[-1]) + 1]


def _wav(samples: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``SAMPLE_RATE``, at least 2,048 samples (zero-padded)."""
    wav = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        import librosa

        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
    return np.pad(wav, (0, max(0, 2048 - len(wav))))


def features(samples: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mono waveform -> ``(N_MELS, FRAMES)`` normalised log-mel of its voiced part."""
    mel = trim(log_mel(_wav(samples, sample_rate)))
    mel = F.interpolate(mel[None], size=FRAMES, mode="linear", align_corners=False)[0]
    return (mel + 5.0) / 3.0


class SlotNet(nn.Module):
    """1-D CNN over mel frames with one linear head per slot: ``(B, N_MELS, FRAMES)`` ->
    ``(B, sum(head sizes))`` logits."""

    def __init__(self, heads: tuple[int, ...], n_mels: int = 64, width: int = 64, pooled: int = 12) -> None:
        super().__init__()
        self.heads = heads
        self.body = nn.Sequential(
            nn.Conv1d(n_mels, width, 5, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, padding=2, stride=2), nn.GELU(),
            nn.Conv1d(width, width, 5, padding=2, stride=2), nn.GELU(),
            nn.AdaptiveAvgPool1d(pooled), nn.Flatten(), nn.Dropout(0.2),
        )
        self.out = nn.Linear(width * pooled, sum(heads))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(mel))

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(logits, list(self.heads), dim=-1))


WORD_HEADS = tuple(len(s) for s in SLOTS)
VOICE_NAMES = tuple(VOICES)


@dataclass
class SpeechEvaluator:
    """The trained word recogniser and voice classifier (``load``)."""

    words: SlotNet
    voices: SlotNet

    @classmethod
    def load(cls, folder: Path = ASSET) -> SpeechEvaluator:
        from safetensors.torch import load_file

        if not (folder / "words.safetensors").is_file():
            raise FileNotFoundError(f"no speech evaluator in {folder}; fix: run scripts/train_speech_evaluator.py")
        words, voices = SlotNet(WORD_HEADS), SlotNet((len(VOICE_NAMES),))
        words.load_state_dict(load_file(folder / "words.safetensors"))
        voices.load_state_dict(load_file(folder / "voices.safetensors"))
        return cls(words.eval(), voices.eval())

    @torch.no_grad()
    def read(self, clips: list[np.ndarray], sample_rate: int = SAMPLE_RATE) -> list[tuple[str, ...]]:
        """The four words each clip says."""
        if not clips:
            return []
        x = torch.stack([features(c, sample_rate) for c in clips])
        heads = self.words.split(self.words(x))
        picks = [h.argmax(-1).tolist() for h in heads]
        return [tuple(SLOTS[s][picks[s][i]] for s in range(len(SLOTS))) for i in range(len(clips))]

    @torch.no_grad()
    def voice(self, clips: list[np.ndarray], sample_rate: int = SAMPLE_RATE) -> list[str]:
        if not clips:
            return []
        x = torch.stack([features(c, sample_rate) for c in clips])
        return [VOICE_NAMES[i] for i in self.voices(x).argmax(-1).tolist()]


def word_scores(said: list[tuple[str, ...]], expected: list[tuple[str, ...]]) -> dict[str, float]:
    """Per-slot accuracy, word accuracy (all slots) and exact match (every word of a sentence)."""
    n = max(len(expected), 1)
    out = {f"{name}_acc": sum(s[i] == e[i] for s, e in zip(said, expected, strict=True)) / n
           for i, name in enumerate(SLOT_NAMES)}
    out["word_acc"] = sum(out[f"{name}_acc"] for name in SLOT_NAMES) / len(SLOT_NAMES)
    out["exact_match"] = sum(s == e for s, e in zip(said, expected, strict=True)) / n
    return out


def voiced_duration(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Seconds between the first and last frame within 40 dB of the loudest."""
    return trim(log_mel(_wav(samples, sample_rate))).shape[1] / FRAMES_PER_S


def duration_error(samples: np.ndarray, reference: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """``|d - d_ref| / d_ref`` of the voiced durations (``reference`` at ``SAMPLE_RATE``)."""
    ref = voiced_duration(reference)
    return abs(voiced_duration(samples, sample_rate) - ref) / max(ref, 1e-6)


def mfcc_dtw(samples: np.ndarray, reference: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Mean MFCC distance along the DTW path between the voiced parts (same voice ~6, other voice ~90)."""
    import librosa

    def mfcc(wav: np.ndarray, sr: int) -> np.ndarray:
        wav = _wav(wav, sr)
        voiced, _ = librosa.effects.trim(wav, top_db=TRIM_DB)
        return np.asarray(librosa.feature.mfcc(y=voiced if len(voiced) > 2048 else wav, sr=SAMPLE_RATE, n_mfcc=13))

    a, b = mfcc(samples, sample_rate), mfcc(reference, SAMPLE_RATE)
    cost, path = librosa.sequence.dtw(X=a, Y=b, metric="euclidean")
    return float(cost[-1, -1] / len(path))


def real_time_factor(compute_s: float, audio_s: float) -> float:
    return compute_s / max(audio_s, 1e-9)


def card(folder: Path = ASSET) -> dict[str, object]:
    """The evaluator's training record (command, accuracy on held-out data)."""
    path = folder / "train_log.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}
