"""Audio post-processing every audio adapter shares: integrated loudness (ITU-R BS.1770-4) and
normalisation to a target, fades, and equal-power crossfades for pieces made of windows.

Why our own loudness meter instead of ``pyloudnorm``: BS.1770 is two biquads and a two-stage
gate (about 30 lines with scipy, already installed with librosa), and one dependency fewer.
"""

from __future__ import annotations

import numpy as np

PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS: normalisation never clips


def _k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """BS.1770's two filters (high shelf, then RLB high pass) designed for ``sample_rate``
    (the bilinear-transform forms of pyloudnorm / libebur128)."""
    out = []
    # stage 1: high shelf, +4 dB above ~1.5 kHz
    g, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = np.tan(np.pi * fc / sample_rate)
    vh = 10 ** (g / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    b = np.array([vh + vb * k / q + k * k, 2 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    out.append((b, a))
    # stage 2: high pass at ~38 Hz
    q, fc = 0.5003270373238773, 38.13547087602444
    k = np.tan(np.pi * fc / sample_rate)
    a0 = 1 + k / q + k * k
    out.append((np.array([1.0, -2.0, 1.0]), np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])))
    return out


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS of ``samples`` (n, channels); ``-inf`` for silence."""
    from scipy.signal import lfilter

    x = np.asarray(samples, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    for b, a in _k_weighting(sample_rate):
        x = lfilter(b, a, x, axis=0)
    block, hop = int(0.4 * sample_rate), int(0.1 * sample_rate)
    if len(x) < block:
        x = np.pad(x, ((0, block - len(x)), (0, 0)))
    starts = range(0, len(x) - block + 1, hop)
    power = np.array([np.mean(x[s:s + block] ** 2, axis=0).sum() for s in starts])
    loud = -0.691 + 10 * np.log10(np.maximum(power, 1e-12))
    gated = power[loud > -70]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10
    final = power[(loud > -70) & (loud > relative)]
    return float(-0.691 + 10 * np.log10(final.mean()))


def normalise_loudness(samples: np.ndarray, sample_rate: int, target: float) -> tuple[np.ndarray, float]:
    """``(samples at ``target`` LUFS, the loudness reached)``: the gain is lowered where the
    peak would pass -1 dBFS, so a quiet-but-peaky clip may end below the target."""
    now = integrated_loudness(samples, sample_rate)
    if not np.isfinite(now):
        return samples, now
    gain = 10 ** ((target - now) / 20)
    peak = float(np.abs(samples).max())
    if peak * gain > PEAK_CEILING:
        gain = PEAK_CEILING / peak
    return (samples * gain).astype(np.float32), now + 20 * np.log10(gain)


def apply_fades(samples: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Raised-cosine fade in and out over ``seconds`` (at most half the clip)."""
    n = min(int(seconds * sample_rate), len(samples) // 2)
    if n <= 0:
        return samples
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n)))[:, None].astype(np.float32)
    out = samples.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def crossfade(pieces: list[np.ndarray], overlap: int) -> np.ndarray:
    """Join windows (each (n, channels)) that overlap by ``overlap`` samples with an
    equal-power crossfade."""
    out = pieces[0]
    if overlap <= 0:
        return np.concatenate(pieces)
    t = np.linspace(0, np.pi / 2, overlap)[:, None]
    fade_out, fade_in = np.cos(t).astype(np.float32), np.sin(t).astype(np.float32)
    for piece in pieces[1:]:
        n = min(overlap, len(out), len(piece))
        mixed = out[-n:] * fade_out[-n:] + piece[:n] * fade_in[:n]
        out = np.concatenate([out[:-n], mixed, piece[n:]])
    return out
