"""Reading notes and tempo back from a mono melody: YIN pitch per frame (de Cheveigné and Kawahara
2002), voiced runs of one semitone become notes (a note the tracker loses for a few frames while
the sound goes on stays one note), the median inter-onset interval gives the tempo.

YIN rather than pYIN: on the synthesiser's clips both read every note, and YIN is ~300x faster.
Our own vectorised YIN (``yin``) instead of ``librosa.yin``: the same algorithm (difference
function through the FFT, cumulative-mean normalisation, first trough under 0.1, parabolic
interpolation), but librosa's numba kernels compile on a process's first call (~15 s here),
which every worker and test run would pay.
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


def frames_of(y: np.ndarray, frame: int = FRAME, hop: int = HOP) -> np.ndarray:
    """Centred frames (n, frame) of ``y`` (padded by half a frame at each end, like librosa)."""
    padded = np.pad(y, (frame // 2, frame // 2))
    count = 1 + (len(padded) - frame) // hop
    return np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop][:count]


def yin(y: np.ndarray, sample_rate: int, fmin: float = FMIN, fmax: float = FMAX, frame: int = FRAME,
        hop: int = HOP, threshold: float = 0.1) -> np.ndarray:
    """Fundamental frequency (Hz) per frame by YIN."""
    frames = frames_of(np.asarray(y, dtype=np.float64), frame, hop)
    window = frame // 2
    min_tau = max(1, int(np.floor(sample_rate / fmax)))
    max_tau = min(window, int(np.ceil(sample_rate / fmin)))
    size = 2 * frame
    cross = np.fft.irfft(np.fft.rfft(frames, size) * np.conj(np.fft.rfft(frames[:, :window], size)), size)
    cross = cross[:, : max_tau + 1]
    energy = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    taus = np.arange(max_tau + 1)
    diff = energy[:, [window]] + (energy[:, taus + window] - energy[:, taus]) - 2 * cross
    diff[:, 0] = 0.0
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cumulative, 1e-12)
    search = cmnd[:, min_tau:max_tau]
    trough = np.zeros_like(search, dtype=bool)
    trough[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
    below = trough & (search < threshold)
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    rows = np.arange(len(search))
    idx = np.clip(first, 1, search.shape[1] - 2)
    a, b, c = search[rows, idx - 1], search[rows, idx], search[rows, idx + 1]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(np.abs(denom) > 1e-12, denom, 1.0), 0.0)
    shift = np.where(first == idx, np.clip(shift, -1, 1), 0.0)
    return np.asarray(sample_rate / (min_tau + first + shift), dtype=np.float64)


def _track(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(midi per frame (nan where unvoiced or unsteady), sounding per frame (loud enough to be a
    note, whether or not its pitch is steady), frame times)``."""
    y = np.asarray(audio, dtype=np.float32)
    if len(y) < FRAME:
        y = np.pad(y, (0, FRAME - len(y)))
    f0 = yin(y, sample_rate)
    rms = np.sqrt(np.mean(frames_of(y.astype(np.float64)) ** 2, axis=1))[: len(f0)]
    peak = float(rms.max()) if rms.size else 0.0
    voiced = rms > max(0.12 * peak, 1e-4)
    # aperiodic frames (noise) wander: keep frames whose pitch agrees with both neighbours
    midi = 69 + 12 * np.log2(np.maximum(f0, 1e-6) / 440.0)
    steady = np.zeros_like(voiced)
    steady[1:-1] = (np.abs(midi[1:-1] - midi[:-2]) < 0.35) & (np.abs(midi[1:-1] - midi[2:]) < 0.35)
    midi = np.where(voiced & steady, midi, np.nan)
    times = np.arange(len(f0)) * HOP / sample_rate
    return midi, voiced, times


def read_notes(audio: np.ndarray, sample_rate: int, min_seconds: float = 0.05) -> list[Note]:
    """Notes as runs of steady frames rounding to one MIDI number, at least ``min_seconds`` long.

    A note ends where another pitch holds for ``min_seconds`` or the sound stops. Inside one
    sounding stretch (no drop in level between), frames whose pitch is unsteady and blips of
    another pitch shorter than ``min_seconds`` do not split a note: a pitch tracker losing the
    note for a few frames is not a new note. A note repeated after a drop in level (a new
    attack) stays two notes."""
    midi, sounding, times = _track(audio, sample_rate)
    dt = HOP / sample_rate
    rounded = np.where(np.isnan(midi), -1, np.round(np.nan_to_num(midi, nan=-1))).astype(int)
    region = np.cumsum(np.concatenate([[1], np.diff(sounding.astype(int)) == 1])) * sounding  # 0: silent
    notes: list[Note] = []
    last_region = -1
    start = 0
    for i in range(1, len(rounded) + 1):
        if i < len(rounded) and rounded[i] == rounded[start]:
            continue
        pitch, length = rounded[start], (i - start) * dt
        if pitch >= 0 and length >= min_seconds:
            here = int(region[start])
            same_stretch = here == last_region and here > 0
            if notes and notes[-1].midi == pitch and (same_stretch or times[start] - notes[-1].end < 0.03):
                notes[-1] = Note(notes[-1].start, float(times[i - 1] + dt), int(pitch))
            else:
                notes.append(Note(float(times[start]), float(times[i - 1] + dt), int(pitch)))
            last_region = here
        start = i
    return notes


def read_tempo(notes: list[Note]) -> float | None:
    """Beats per minute from the median interval between note onsets (one note per beat)."""
    if len(notes) < 3:
        return None
    gaps = np.diff([n.start for n in notes])
    return float(60.0 / np.median(gaps))
