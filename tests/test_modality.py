"""The modality contract: a second, minimal adapter (a sine tone as music, ``tests/plugins/sine.py``)
goes through the CLI, the REST API, the web UI's operations and the SQLite store to a WAV with
its sidecar, needing nothing but its plugin module. (The Redis store and a Celery worker:
``tests/test_celery.py``.)"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from genaccel.api import Backend, create_app
from genaccel.cli import main
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine
from pipelines.modality import ADAPTERS, adapter_for, served_modalities
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry

PLUGIN = "tests.plugins.sine"


@pytest.fixture
def sine(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("GENACCEL_PLUGINS", json.dumps([PLUGIN]))
    yield Settings(home=isolated_home, default_model="tiny-sd", plugins=[PLUGIN], rate_limit_per_min=0)
    ADAPTERS.adapters.pop("sine", None)  # the rest of the suite runs without the test modality


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def peak_hz(path: Path) -> float:
    samples, rate = sf.read(path)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_plugin_adds_a_model_and_its_modality(sine: Settings) -> None:
    registry = ModelRegistry(sine)
    info = registry.resolve("sine-test")
    assert info.modality == "music" and adapter_for(info).name == "sine"
    assert "music" in served_modalities() and registry.default_model("music") == "sine-test"
    assert registry.default_model("image") == "tiny-sd"  # the configured default serves images only
    request, _ = prepare_request(JobRequest.from_flat({"modality": "music", "prompt": "a tone"}), registry, sine)
    assert request.model == "sine-test" and request.params.duration_s == 1.0
    assert request.params.output_format == "wav" and request.params.steps == 4


def test_cli_renders_a_wav_with_sidecar_and_reruns_it(sine: Settings, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    code, out, err = run(capsys, "render", "a C5 tone", "--modality", "music", "--duration", "0.5", "--seed", "3",
                         "--out", str(tmp_path / "a"))
    assert code == 0, err
    (wav,) = (Path(line) for line in out.splitlines())
    assert wav.suffix == ".wav" and wav.with_suffix(".json").is_file()
    info = sf.info(wav)
    assert info.samplerate == 16000 and info.channels == 1 and info.duration == 0.5
    assert abs(peak_hz(wav) - 523.25) < 3  # C5
    side = json.loads(wav.with_suffix(".json").read_text())
    assert side["request"]["prompt"] == "a C5 tone" and side["seed"] == 3 and side["model"] == "sine-test"
    for source in (wav, wav.with_suffix(".json")):  # the file itself, or its sidecar alone
        code, out, err = run(capsys, "render", "--from", str(source), "--out", str(tmp_path / source.suffix[1:]))
        assert code == 0, err
        again = Path(out.strip())
        assert np.array_equal(sf.read(again)[0], sf.read(wav)[0])


@pytest.mark.parametrize("fmt", ["flac", "mp3", "ogg"])
def test_cli_other_audio_formats_carry_their_metadata(sine: Settings, capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, fmt: str) -> None:
    code, out, err = run(capsys, "render", "an A4 tone", "--modality", "music", "--duration", "0.5",
                         "--format", fmt, "--out", str(tmp_path))
    assert code == 0, err
    path = Path(out.strip())
    assert path.suffix == f".{fmt}" and sf.info(path).samplerate == 16000
    path.with_suffix(".json").unlink()  # the tag alone re-runs it
    code, out, err = run(capsys, "render", "--from", str(path), "--out", str(tmp_path / "again"))
    assert code == 0, err and Path(out.strip()).suffix == f".{fmt}"


@pytest.mark.parametrize(("args", "message"), [
    (["--duration", "9"], "duration_s=9.0 is invalid: sine-test makes at most 5 s; fix: pass --duration 5 or less"),
    (["--format", "png"], "output_format='png' is invalid: music outputs are written as wav, flac, mp3, ogg"),
    (["--format", "aiff"], "output_format='aiff' is invalid: is not a format genaccel writes"),
    (["--voice", "anna"], "voice='anna' is invalid: applies to modality speech, not music"),
    (["--width", "64"], "width=64 is invalid: does not apply to sine-test (music); fix: drop width"),
    (["--speed", "1.5"], "speed=1.5 is invalid: applies to modality speech, not music"),
])
def test_cli_bad_music_input_is_refused_before_queueing(sine: Settings, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run(capsys, "render", "a tone", "--modality", "music", *args, "--out", str(tmp_path / "out"))
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_from_a_file_without_metadata_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bare = tmp_path / "bare.wav"
    sf.write(bare, np.zeros((160, 1), np.float32), 16000)
    code, _, err = run(capsys, "render", "--from", str(bare))
    assert code == 2 and "holds no genaccel metadata and has no sidecar bare.json" in err


@pytest.fixture
def client(sine: Settings) -> Iterator[TestClient]:
    engine = LocalEngine(sine, scoped=False)
    engine.dispatcher.start()
    backend = Backend(sine, engine.store, engine.dispatcher, ModelRegistry(sine, allow_paths=False))
    yield TestClient(create_app(backend))
    engine.dispatcher.stop(timeout=10)


def wait_done(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.time() + 60
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_rest_music_job_to_wav_and_sidecar(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"modality": "music", "prompt": "an A4 tone", "duration": 0.25, "seed": 1,
                                      "num_outputs": 2})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"])
    assert job["state"] == "succeeded" and job["progress"] == {"step": 4, "total": 4}
    first, second = job["artifacts"]
    assert (first["seed"], second["seed"]) == (1, 2)
    assert first["media_type"] == "audio/wav" and first["channels"] == 1 and first["duration_s"] == 0.25
    got = client.get(first["url"])
    assert got.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(got.content))
    assert rate == 16000 and len(samples) == 4000
    side = client.get(first["sidecar_url"])
    assert side.headers["content-type"] == "application/json" and side.json()["index"] == 0
    assert client.get(f"/v1/artifacts/{job['id']}/..%2Fjobs.db").status_code == 404


def test_rest_bad_music_input_is_422_naming_the_field(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"modality": "music", "prompt": "a tone", "duration": 30})
    assert r.status_code == 422
    assert "sine-test makes at most 5 s" in r.text and "duration_s" in r.text


def test_ui_music_tab_serves_the_plugin(sine: Settings) -> None:
    from ui.app import build_ui
    from ui.generate import tab_fields
    from ui.links import FileLinks
    from ui.page import Page, unavailable_reason

    engine = LocalEngine(sine, scoped=False)
    engine.dispatcher.start()
    try:
        backend = Backend(sine, engine.store, engine.dispatcher, ModelRegistry(sine, allow_paths=False))
        assert unavailable_reason(backend, "music") is None
        assert unavailable_reason(backend, "speech") is None  # built in (pipelines/speech.py)
        assert tab_fields([backend.registry.resolve("sine-test")]) == {"duration_s"}
        build_ui(backend, links=FileLinks("/ui/files"))  # the music tab builds from the adapter's fields
        page = Page(backend, FileLinks("/ui/files"))
        job = page.api_submit({"modality": "music", "prompt": "a G4 tone", "duration": 0.25, "format": "flac"})
        assert job["error"] is None, job
        deadline = time.time() + 60
        while job["state"] not in ("succeeded", "failed") and time.time() < deadline:
            time.sleep(0.05)
            job = page.api_job(job["id"])
        assert job["state"] == "succeeded", job["error"]
        (art,) = job["artifacts"]
        assert art["media_type"] == "audio/flac" and art["url"].startswith("/ui/files/")
        bad = page.api_submit({"modality": "music", "prompt": "a tone", "format": "mp4"})
        assert bad["error"]["field"] == "output_format"
    finally:
        engine.dispatcher.stop(timeout=10)


def test_speech_fields_are_bounded_before_any_model_is_looked_up(settings: Settings) -> None:
    from genaccel.spec import validate_request

    for flat, message in [({"speed": 9}, "speed=9.0 is invalid: must be between 0.25 and 4"),
                          ({"voice": ""}, None), ({"voice": "x" * 65}, "must have 1..64 characters")]:
        request = JobRequest.from_flat({"modality": "speech", "prompt": "hello", **flat})
        if message is None:
            validate_request(request, settings.limits)
            continue
        with pytest.raises(InvalidRequest, match=message):
            validate_request(request, settings.limits)


def test_image_adapter_still_refuses_audio_fields(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    with pytest.raises(InvalidRequest, match=r"duration_s=2\.0 is invalid: applies to modality speech or music"):
        prepare_request(JobRequest.from_flat({"prompt": "a cat", "duration": 2}), registry, settings)
    with pytest.raises(InvalidRequest, match="output_format='wav' is invalid: image outputs are written as png"):
        prepare_request(JobRequest.from_flat({"prompt": "a cat", "format": "wav"}), registry, settings)
