"""Audio bytes as OpenAI's speech endpoint answers them: whole files (wav, flac, mp3 through
soundfile), raw ``pcm`` (16-bit little-endian mono at 24 kHz, OpenAI's layout), and the pieces of
a stream (a WAV header whose sizes say "unknown length", then 16-bit frames; MP3 frames; PCM).

Resampling to 24 kHz for ``pcm`` is linear interpolation (numpy): speech models here already
sample at 16-24 kHz, and pulling in a resampler library for one format did not pay for itself.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

PCM_RATE = 24000
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "pcm": "audio/pcm"}
SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", None)}
STREAMABLE = ("wav", "mp3", "pcm")


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """``(samples (n, channels) float32, sample_rate)`` of an audio file."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, int(rate)


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """A whole file (or raw PCM) of ``samples`` ``(n, channels)``."""
    if fmt == "pcm":
        return pcm(samples, rate)
    container, subtype = SOUNDFILE[fmt]
    out = io.BytesIO()
    sf.write(out, samples, rate, format=container, subtype=subtype)
    return out.getvalue()


def pcm(samples: np.ndarray, rate: int) -> bytes:
    """16-bit little-endian mono at 24 kHz."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != PCM_RATE and len(mono):
        n = max(1, round(len(mono) * PCM_RATE / rate))
        mono = np.interp(np.arange(n) * rate / PCM_RATE, np.arange(len(mono)), mono)
    return int16(mono[:, None])


def int16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_stream_header(rate: int, channels: int) -> bytes:
    """A 16-bit PCM WAV header whose RIFF and data sizes are 0xFFFFFFFF: the length is not known
    while the audio is still being made (players read to the end of the stream)."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + \
        b"data" + struct.pack("<I", 0xFFFFFFFF)


def stream_piece(samples: np.ndarray, rate: int, fmt: str, first: bool) -> bytes:
    """The bytes of one chunk of a stream in ``fmt`` (the first one carries a WAV's header)."""
    if fmt == "pcm":
        return pcm(samples, rate)
    if fmt == "wav":
        return (wav_stream_header(rate, samples.shape[1]) if first else b"") + int16(samples)
    return encode(samples, rate, "mp3")  # MP3 streams are concatenated frames
