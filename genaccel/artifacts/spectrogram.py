"""A spectrogram PNG beside every audio artifact: log-magnitude STFT (dB, 80 dB range), low
frequencies at the bottom, one column per 16 ms, drawn with numpy and Pillow (no plotting
library on the job path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from genaccel.artifacts.meta import write_atomic

_ANCHORS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                     [250, 193, 39], [252, 255, 164]], dtype=np.float64)  # inferno-like


def spectrogram_path(audio: Path) -> Path:
    return audio.with_name(audio.stem + ".spectrogram.png")


def spectrogram_image(samples: np.ndarray, sample_rate: int, height: int = 256, max_width: int = 1600) -> Image.Image:
    """RGB image of the mono mix of ``samples`` (n, channels) or (n,)."""
    x = np.asarray(samples, dtype=np.float32)
    x = x.mean(axis=1) if x.ndim == 2 else x
    n_fft = 1024 if sample_rate > 24_000 else 512
    hop = max(1, int(sample_rate * 0.016))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None, :], axis=1)).T  # (bins, frames)
    db = 20 * np.log10(np.maximum(spec, 1e-8))
    db = np.clip((db - (db.max() - 80.0)) / 80.0, 0.0, 1.0)[::-1]
    pos = db * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    width = min(max_width, max(64, frames))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def write_spectrogram(samples: np.ndarray, sample_rate: int, audio: Path) -> Path:
    """Write ``NAME.spectrogram.png`` beside the audio file ``audio``; returns its path."""
    path = spectrogram_path(audio)
    image = spectrogram_image(samples, sample_rate)
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
    return path
