"""Artifact writers per media type: each embeds the metadata where its format allows, always
writes a sidecar, and reads back into the request that made it."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from genaccel.artifacts import (
    artifact_file,
    check_audio_format,
    read_metadata,
    request_from_artifact,
    write_audio,
    write_png,
    write_video,
)
from genaccel.errors import BadInputFile, InvalidRequest
from genaccel.spec import JobRequest

REQUEST = JobRequest.from_flat({"prompt": "a red square moving right", "modality": "video", "seed": 4, "steps": 3})
FRAMES = [Image.new("RGB", (63, 48), (20 * i, 40, 200 - 20 * i)) for i in range(9)]  # odd width on purpose
TONE = (0.25 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000))[:, None].astype(np.float32)


@pytest.mark.parametrize(("fmt", "media_type"), [("mp4", "video/mp4"), ("webm", "video/webm"), ("gif", "image/gif")])
def test_video_writers_embed_metadata_sidecar_and_poster(tmp_path: Path, fmt: str, media_type: str) -> None:
    path = tmp_path / f"clip.{fmt}"
    art = write_video(FRAMES, 8.0, path, fmt, REQUEST, 4, {"job_id": "j1"})
    assert art.media_type == media_type and art.frames == 9 and art.fps == 8.0 and art.duration_s == 1.125
    assert (tmp_path / "clip.poster.png").is_file() and art.sidecar == "clip.json"
    assert json.loads((tmp_path / "clip.json").read_text())["poster"] == "clip.poster.png"
    (tmp_path / "clip.json").unlink()  # the embedded tag alone re-runs it
    assert request_from_artifact(path) == REQUEST and read_metadata(path)["job_id"] == "j1"
    assert not list(tmp_path.glob("*.part"))


def test_mp4_is_h264_yuv420p_with_the_audio_muxed_in(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(FRAMES, 8.0, path, "mp4", REQUEST, 4, {}, audio=(TONE, 16000))
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.format.name == "yuv420p"
        assert (video.width, video.height) == (64, 48)  # padded to even sides
        assert audio.codec_context.name == "aac"
        assert sum(1 for _ in container.decode(video=0)) == 9


@pytest.mark.parametrize(("fmt", "media_type"), [("wav", "audio/wav"), ("flac", "audio/flac"),
                                                 ("mp3", "audio/mpeg"), ("ogg", "audio/ogg")])
def test_audio_writers_keep_rate_channels_and_metadata(tmp_path: Path, fmt: str, media_type: str) -> None:
    request = REQUEST.model_copy(update={"modality": "music"})
    stereo = np.concatenate([TONE, -TONE], axis=1)
    path = tmp_path / f"tone.{fmt}"
    art = write_audio(stereo, 16000, path, fmt, request, 4, {"job_id": "j2"})
    assert art.media_type == media_type and art.sample_rate == 16000 and art.channels == 2
    assert art.duration_s == 0.5
    info = sf.info(path)
    assert info.samplerate == 16000 and info.channels == 2
    (tmp_path / "tone.json").unlink()
    assert request_from_artifact(path) == request


def test_wav_with_a_long_prompt_keeps_the_request_in_its_tag_or_sidecar(tmp_path: Path) -> None:
    request = JobRequest.from_flat({"prompt": "la " * 600, "modality": "music", "seed": 1})
    path = tmp_path / "long.wav"
    write_audio(TONE, 16000, path, "wav", request, 1, {"timings": {"run_s": 1.0}})
    assert request_from_artifact(path) == request  # from the sidecar
    assert request_from_artifact(tmp_path / "long.json") == request


def test_png_has_a_sidecar_too(tmp_path: Path) -> None:
    request = JobRequest.from_flat({"prompt": "a cat", "seed": 2})
    art = write_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", request, 2, {"job_id": "j3"})
    assert art.sidecar == "x.json" and json.loads((tmp_path / "x.json").read_text())["width"] == 8
    assert artifact_file([art], "x.json") == (str(tmp_path / "x.json"), "application/json")
    assert artifact_file([art], "x.png") == (str(tmp_path / "x.png"), "image/png")
    assert artifact_file([art], "../x.png") is None


def test_audio_formats_the_writer_cannot_produce_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="output_format='mp3' is invalid: MP3 cannot hold 12345 Hz audio"):
        check_audio_format("mp3", 12345, 1)
    with pytest.raises(InvalidRequest, match="output_format='aiff' is invalid: is not an audio format"):
        check_audio_format("aiff", 16000, 1)
    check_audio_format("wav", 12345, 6)


def test_reading_a_foreign_or_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BadInputFile, match="no such file"):
        read_metadata(tmp_path / "nothing.mp4")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(BadInputFile, match=r"holds no genaccel metadata and has no sidecar plain\.json"):
        read_metadata(plain)
