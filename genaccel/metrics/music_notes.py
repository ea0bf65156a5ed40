"""Reading notes and tempo back from a mono melody: YIN pitch per frame (librosa), voiced runs of one
semitone become notes, the median inter-onset interval gives the tempo.

YIN rather than pYIN: on the synthesiser's clips both read every note, and YIN takes ~4 ms per
clip against pYIN's ~1.4 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME = 1024
HOP = 128
FMIN = 110.0
FMAX = 1400.0


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    end: float
    midi: int


def pitch_track(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(midi per frame (float, nan where unvoiced), frame times)``."""
    import librosa

    y = np.asarray(audio, dtype=np.float32)
    if len(y) < FRAME:
        y = np.pad(y, (0, FRAME - len(y)))
    f0 = librosa.yin(y, fmin=FMIN, fmax=FMAX, sr=sample_rate, frame_length=FRAME, hop_length=HOP)
    rms = librosa.feature.rms(y=y, frame_length=FRAME, hop_length=HOP)[0][: len(f0)]
    peak = float(rms.max()) if rms.size else 0.0
    voiced = rms > max(0.12 * peak, 1e-4)
    # aperiodic frames (noise) wander: keep frames whose pitch agrees with both neighbours
    midi = 69 + 12 * np.log2(np.maximum(f0, 1e-6) / 440.0)
    steady = np.zeros_like(voiced)
    steady[1:-1] = (np.abs(midi[1:-1] - midi[:-2]) < 0.35) & (np.abs(midi[1:-1] - midi[2:]) < 0.35)
    midi = np.where(voiced & steady, midi, np.nan)
    times = np.arange(len(f0)) * HOP / sample_rate
    return midi, times


def read_notes(audio: np.ndarray, sample_rate: int, min_seconds: float = 0.05) -> list[Note]:
    """Notes as runs of frames rounding to one MIDI number, at least ``min_seconds`` long; a
    run is split where the pitch changes or the sound stops."""
    midi, times = pitch_track(audio, sample_rate)
    rounded = np.where(np.isnan(midi), -1, np.round(np.nan_to_num(midi, nan=-1))).astype(int)
    notes: list[Note] = []
    start = 0
    dt = HOP / sample_rate
    for i in range(1, len(rounded) + 1):
        if i == len(rounded) or rounded[i] != rounded[start]:
            if rounded[start] >= 0 and (i - start) * dt >= min_seconds:
                if notes and notes[-1].midi == rounded[start] and times[start] - notes[-1].end < 0.03:
                    notes[-1] = Note(notes[-1].start, float(times[i - 1] + dt), int(rounded[start]))
                else:
                    notes.append(Note(float(times[start]), float(times[i - 1] + dt), int(rounded[start])))
            start = i
    return notes


def read_tempo(notes: list[Note]) -> float | None:
    """Beats per minute from the median interval between note onsets (one note per beat)."""
    if len(notes) < 3:
        return None
    gaps = np.diff([n.start for n in notes])
    return float(60.0 / np.median(gaps))
