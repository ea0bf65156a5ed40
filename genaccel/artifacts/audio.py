"""Audio files through soundfile (libsndfile): WAV (16-bit PCM), FLAC, MP3 and OGG (Vorbis) at
the model's own sample rate and channel count. The metadata JSON goes into the file's comment
tag where the format holds it (FLAC, OGG, MP3 always; WAV's INFO chunk up to ``WAV_TAG_MAX``
bytes) and always into the sidecar. A spectrogram PNG (``NAME.spectrogram.png``) goes beside
every audio file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genaccel.artifacts.meta import payload, write_atomic, write_sidecar
from genaccel.artifacts.spectrogram import write_spectrogram
from genaccel.errors import InvalidRequest
from genaccel.spec import Artifact, JobRequest

AUDIO_FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "ogg": ("OGG", "VORBIS", "audio/ogg"),
}
WAV_TAG_MAX = 2000
"""libsndfile drops a WAV comment above about 2 KiB (measured with libsndfile 1.2.2)."""
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def check_audio_format(fmt: str, sample_rate: int, channels: int) -> None:
    """Refuse, before a job runs, a format the writer cannot produce at this rate and layout."""
    if fmt not in AUDIO_FORMATS:
        raise InvalidRequest("output_format", fmt, "is not an audio format genaccel writes",
                             f"use one of: {', '.join(AUDIO_FORMATS)}")
    if fmt == "mp3" and sample_rate not in MP3_RATES:
        raise InvalidRequest("output_format", fmt, f"MP3 cannot hold {sample_rate} Hz audio",
                             "pass --format wav or flac")
    if fmt in ("mp3", "ogg") and channels > 2:
        raise InvalidRequest("output_format", fmt, f"cannot hold {channels} channels here", "pass --format wav")


def write_audio(samples: np.ndarray, sample_rate: int, path: Path, fmt: str, request: JobRequest, seed: int,
                meta: dict[str, Any]) -> Artifact:
    """Write ``samples`` (float, ``(n, channels)``, in [-1, 1]) atomically with its metadata."""
    import soundfile as sf

    major, subtype, media_type = AUDIO_FORMATS[fmt]
    data = payload(request, seed, meta)
    text = json.dumps(data, sort_keys=True)
    if fmt == "wav" and len(text.encode()) > WAV_TAG_MAX:
        text = json.dumps({"request": data["request"], "seed": seed}, sort_keys=True)
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)

    def write(tmp: Path) -> None:
        with sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=clipped.shape[1], format=major,
                          subtype=subtype) as f:
            # libsndfile takes FLAC/OGG/MP3 tags before the data and WAV's INFO chunk after it
            if fmt != "wav":
                f.software, f.comment = "genaccel", text
            f.write(clipped)
            if fmt == "wav":
                f.software = "genaccel"
                if len(text.encode()) <= WAV_TAG_MAX:
                    f.comment = text

    write_atomic(path, write)
    side = write_sidecar(path, data)
    write_spectrogram(clipped, sample_rate, path)
    return Artifact(name=path.name, path=str(path.resolve()), media_type=media_type, seed=seed,
                    bytes=path.stat().st_size, duration_s=round(clipped.shape[0] / sample_rate, 4),
                    sample_rate=sample_rate, channels=clipped.shape[1], sidecar=side.name)


def read_audio_tag(path: Path) -> dict[str, Any] | None:
    """The metadata JSON in an audio file's comment tag (``None``: not audio, or no tag)."""
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            text = f.comment
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None
    try:
        return dict(json.loads(text)) if text else None
    except ValueError:
        return None


def chunk_record(index: int, total: int, text: str, samples: np.ndarray, sample_rate: int, step: int) -> dict[str, Any]:
    """One streamed part of an audio output as JSON: its place, text and a FLAC data URL (lossless,
    about half a WAV's size, played by browsers)."""
    import base64
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(samples, dtype=np.float32), -1, 1), sample_rate, format="FLAC", subtype="PCM_16")
    return {"index": index, "total": total, "text": text, "sample_rate": sample_rate, "step": step,
            "duration_s": round(len(samples) / sample_rate, 4),
            "audio": "data:audio/flac;base64," + base64.b64encode(buf.getvalue()).decode()}


def chunk_samples(record: dict[str, Any]) -> np.ndarray:
    """The float32 ``(n, channels)`` samples of a ``chunk_record``."""
    import base64
    import io

    import soundfile as sf

    data = base64.b64decode(str(record["audio"]).split(",", 1)[1])
    samples, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.asarray(samples)
