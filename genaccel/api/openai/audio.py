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
    return without_info_frame(encode(samples, rate, "mp3"))  # MP3 streams are concatenated frames


MP3_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 Layer III
            2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}  # MPEG-2 and 2.5
MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame_length(header: bytes) -> int:
    """Bytes of the Layer III frame starting with ``header`` (0 when it is not one)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE6 != 0xE2:
        return 0
    version, kbps_index, rate_index = (header[1] >> 3) & 3, header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or kbps_index in (0, 15) or rate_index == 3:
        return 0
    kbps = MP3_KBPS[3 if version == 3 else 2][kbps_index]
    per = 144000 if version == 3 else 72000
    return per * kbps // MP3_RATES[version][rate_index] + ((header[2] >> 1) & 1)


def without_info_frame(data: bytes) -> bytes:
    """An MP3 file less its leading Xing/Info frame. That frame states the length of one piece: in
    a stream of concatenated pieces it would give players a wrong length (the first piece's) and
    sit between the pieces as a stray frame; without it the stream is plain audio frames. (A
    frame parser of our own: the header is four bytes, and no installed library strips the tag.)"""
    n = mp3_frame_length(data[:4])
    if n and (b"Xing" in data[4:48] or b"Info" in data[4:48]):
        return data[n:]
    return data
