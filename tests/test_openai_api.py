"""The OpenAI-compatible routes in process (FastAPI's client, the embedded shape): parameters
honoured, ignored (the warnings header) or refused, errors in OpenAI's shape, keys and per-key
isolation, idempotency, the bounded synchronous wait that cancels its job, speech on the real
speech models (whole and streamed, one job), image-to-image refusals, video on the real ``tiny-wan``
and ``tiny-wan-i2v`` (seconds and size fitted to their rules, input_reference, refusals); the fake
``video-test`` plugin only where a controllable clip is needed (colours, paging, key isolation).
The official ``openai`` client is tested in test_openai_client.py."""

from __future__ import annotations

import base64
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
from PIL import Image

from genaccel.api import Backend, create_app
from genaccel.refdata.speech import available as espeak_available
from genaccel.service.auth import digest
from genaccel.settings import Settings
from pipelines.engine import LocalEngine
from pipelines.registry import ModelRegistry

PLUGINS = ["tests.plugins.speech", "tests.plugins.video"]
KEY_A, KEY_B = "key-alice", "key-bob"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
V1 = "/openai/v1"


def unregister_plugins() -> None:
    from pipelines.modality import ADAPTERS

    for name in ("test-speech", "test-video"):  # the rest of the suite runs without the test modalities
        ADAPTERS.adapters.pop(name, None)


def make_app(home: Path, **overrides: Any) -> tuple[Any, LocalEngine]:
    settings = Settings(home=home, default_model="tiny-sd", plugins=PLUGINS,
                        api_keys=[digest(KEY_A), digest(KEY_B)], **overrides)
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    backend = Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings, allow_paths=False))
    return create_app(backend), engine


@pytest.fixture
def client(isolated_home: Path) -> Iterator[TestClient]:
    app, engine = make_app(isolated_home)
    try:
        yield TestClient(app)
    finally:
        engine.dispatcher.stop(timeout=10)
        unregister_plugins()


def error(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def png(color: str = "red", size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def test_images_generate_b64_with_ignored_parameters_named_in_the_warnings_header(client: TestClient) -> None:
    r = client.post(f"{V1}/images/generations", headers=A, json={
        "model": "noop", "prompt": "a cat", "n": 2, "size": "64x96", "quality": "hd", "style": "vivid",
        "user": "u-1", "seed": 5, "output_format": "jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == "64x96" and body["output_format"] == "jpeg" and len(body["data"]) == 2
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert image.format == "JPEG" and image.size == (64, 96)
    warnings = r.headers["X-Genaccel-Warnings"]
    assert "quality ignored" in warnings and "style ignored" in warnings and "user" not in warnings
    job = client.get(f"/v1/jobs/{r.headers['X-Genaccel-Job-Id']}", headers=A).json()
    assert job["request"]["seed"] == 5 and job["request"]["num_outputs"] == 2
    assert job["metadata"]["api"] == "openai" and job["metadata"]["user"] == "u-1"
    # the same route at /v1 (no clash there), while /v1/models stays the native catalogue
    at_v1 = client.post("/v1/images/generations", headers=A, json={"model": "noop", "prompt": "a cat"})
    assert at_v1.status_code == 200
    assert isinstance(client.get("/v1/models", headers=A).json(), list)
    models = client.get(f"{V1}/models", headers=A).json()
    assert models["object"] == "list" and {"id": "speech-test", "object": "model", "created": 0,
                                           "owned_by": "genaccel-builtin", "modality": "speech"} in models["data"]
    assert client.get(f"{V1}/models/video-test", headers=A).json()["modality"] == "video"
    assert error(client.get(f"{V1}/models/nope", headers=A))["code"] == "model_not_found"
    # every job of this surface counts in the same metrics
    assert 'genaccel_jobs{state="succeeded"} 2' in client.get("/metrics").text


def test_image_url_is_a_signed_link_that_needs_no_key(client: TestClient) -> None:
    r = client.post(f"{V1}/images/generations", headers=A,
                    json={"model": "noop", "prompt": "a cat", "response_format": "url"})
    url = r.json()["data"][0]["url"]
    got = client.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    forged = client.get(url.replace("sig=", "sig=0"))
    assert forged.status_code == 403 and error(forged)["type"] == "permission_error"


def test_edit_runs_image_to_image_on_the_uploaded_image(client: TestClient) -> None:
    r = client.post(f"{V1}/images/edits", headers=A, files={"image": ("in.png", png(), "image/png")},
                    data={"prompt": "a blue square", "model": "tiny-sd", "steps": "2", "size": "64x64",
                          "strength": "0.5", "mask": "ignored"})
    assert r.status_code == 200, r.text
    job = client.get(f"/v1/jobs/{r.headers['X-Genaccel-Job-Id']}", headers=A).json()
    assert job["request"]["init_image"] == "uploaded" and job["request"]["strength"] == 0.5
    assert "mask ignored" in r.headers["X-Genaccel-Warnings"]
    missing = client.post(f"{V1}/images/edits", headers=A, data={"prompt": "x", "model": "tiny-sd"})
    assert missing.status_code == 400 and error(missing)["param"] == "image"
    garbled = client.post(f"{V1}/images/edits", headers={**A, "Content-Type": "multipart/form-data"}, content=b"x")
    assert garbled.status_code == 400 and error(garbled)["code"] == "invalid_body"


def test_an_edit_that_would_denoise_no_step_is_refused_before_queueing(client: TestClient) -> None:
    """steps x strength < 1 used to be queued and crash in the VAE; now 400 (OpenAI) and 422 (native)."""
    text = "with steps=1, strength=0.5 denoises int(1 x 0.5) = 0 steps"
    r = client.post(f"{V1}/images/edits", headers=A, files={"image": ("in.png", png(), "image/png")},
                    data={"prompt": "a blue square", "model": "tiny-sd", "steps": "1", "strength": "0.5"})
    assert r.status_code == 400 and error(r)["param"] == "strength" and text in error(r)["message"]
    assert "fix: raise steps to at least 2, or strength to at least 1" in error(r)["message"]
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    native = client.post("/v1/jobs", headers=A, json={"prompt": "a cat", "model": "tiny-sd", "init_image": url,
                                                      "steps": 1, "strength": 0.5})
    assert native.status_code == 422 and text in native.text
    assert client.get("/v1/jobs", headers=A).json()["jobs"] == []  # nothing was queued


@pytest.mark.parametrize(("body", "status", "param", "text"), [
    ({"prompt": "a cat", "size": "banana"}, 400, "size", "must be WIDTHxHEIGHT"),
    ({"prompt": "a cat", "size": "4096x4096"}, 400, "size", "must be between 64 and 2048"),
    ({"prompt": "a cat", "size": "66x64"}, 400, "size", "must be a multiple of 8"),
    ({"prompt": "a cat", "n": 99}, 400, "n", "num_outputs=99 is invalid"),
    ({"prompt": "a cat", "stepz": 3}, 400, "stepz", "unknown parameter 'stepz'"),
    ({"prompt": "a cat", "stream": True}, 400, "stream", "stream=true is not supported"),
    ({"prompt": "a cat", "response_format": "gif"}, 400, "response_format", "use b64_json or url"),
    ({"size": "64x64"}, 400, "prompt", "prompt is required"),
    ({"prompt": "a cat", "model": "dall-e-9"}, 404, "model", "no such model"),
    ({"prompt": "a cat", "model": "speech-test"}, 400, "model", "serves speech, not image"),
])
def test_bad_image_requests_get_openai_errors(client: TestClient, body: dict[str, Any], status: int, param: str,
                                              text: str) -> None:
    r = client.post(f"{V1}/images/generations", headers=A, json={"model": "noop", **body})
    assert r.status_code == status, r.text
    err = error(r)
    assert err["param"] == param and text in err["message"] and err["type"] == "invalid_request_error"


def test_keys_isolation_and_rate_limit(isolated_home: Path) -> None:
    app, engine = make_app(isolated_home, rate_limit_per_min=3)
    try:
        c = TestClient(app)
        missing = c.post(f"{V1}/images/generations", json={"prompt": "a cat", "model": "noop"})
        assert missing.status_code == 401 and error(missing)["type"] == "authentication_error"
        wrong = c.get(f"{V1}/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and error(wrong)["code"] == "invalid_api_key"
        video = c.post(f"{V1}/videos", headers=A, data={"prompt": "a red ball", "model": "video-test"}).json()
        other = c.get(f"{V1}/videos/{video['id']}", headers=B)
        assert other.status_code == 404 and error(other)["code"] == "not_found"  # another key's job is not there
        c.get(f"{V1}/videos/{video['id']}", headers=A)
        c.get(f"{V1}/videos/{video['id']}", headers=A)
        limited = c.get(f"{V1}/videos/{video['id']}", headers=A)
        assert limited.status_code == 429 and error(limited)["type"] == "rate_limit_error"
        assert int(limited.headers["Retry-After"]) >= 1
    finally:
        engine.dispatcher.stop(timeout=10)
        unregister_plugins()


def test_idempotency_key_answers_a_retry_with_the_first_job(client: TestClient) -> None:
    body = {"model": "noop", "prompt": "a cat"}
    first = client.post(f"{V1}/images/generations", headers={**A, "Idempotency-Key": "k1"}, json=body)
    again = client.post(f"{V1}/images/generations", headers={**A, "Idempotency-Key": "k1"}, json=body)
    other = client.post(f"{V1}/images/generations", headers={**B, "Idempotency-Key": "k1"}, json=body)
    assert first.headers["X-Genaccel-Job-Id"] == again.headers["X-Genaccel-Job-Id"]
    assert other.headers["X-Genaccel-Job-Id"] != first.headers["X-Genaccel-Job-Id"]  # keys are per API key


def test_operator_aliases_answer_openai_model_names(isolated_home: Path) -> None:
    app, engine = make_app(isolated_home, openai_models={"dall-e-3": "noop", "tts-1": "speech-test"})
    try:
        c = TestClient(app)
        r = c.post(f"{V1}/images/generations", headers=A, json={"model": "dall-e-3", "prompt": "a cat"})
        assert r.status_code == 200 and "model 'dall-e-3' is served by 'noop' here" in r.headers["X-Genaccel-Warnings"]
        assert c.post(f"{V1}/audio/speech", headers=A, json={"model": "tts-1", "input": "hi"}).status_code == 200
        alias = c.get(f"{V1}/models/dall-e-3", headers=A).json()
        assert alias["alias_of"] == "noop" and alias["modality"] == "image"
    finally:
        engine.dispatcher.stop(timeout=10)
        unregister_plugins()


def test_a_synchronous_call_past_its_timeout_is_cancelled(isolated_home: Path) -> None:
    app, engine = make_app(isolated_home, openai_timeout_s=0.3)
    try:
        c = TestClient(app)
        r = c.post(f"{V1}/audio/speech", headers=A, json={"model": "speech-test", "input": "hello", "steps": 200})
        assert r.status_code == 504 and r.headers["x-should-retry"] == "false"
        err = error(r)
        assert err["code"] == "timeout" and "did not finish within 0.3 s and was cancelled" in err["message"]
        job_id = r.headers["X-Genaccel-Job-Id"]
        deadline = time.time() + 30
        while (job := c.get(f"/v1/jobs/{job_id}", headers=A).json())["state"] not in ("cancelled", "succeeded"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert job["state"] == "cancelled" and job["progress"]["step"] < 200
    finally:
        engine.dispatcher.stop(timeout=10)
        unregister_plugins()


def test_a_failed_job_is_a_500_the_client_does_not_retry(client: TestClient) -> None:
    r = client.post(f"{V1}/audio/speech", headers=A, json={"model": "speech-test", "input": "please explode"})
    assert r.status_code == 500 and r.headers["x-should-retry"] == "false"
    err = error(r)
    assert err["type"] == "server_error" and err["code"] == "pipeline_failed"
    assert "failed: RuntimeError: the fake speech model exploded" in err["message"]


def test_an_unexpected_exception_is_answered_in_openai_shape(client: TestClient,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken() -> None:
        raise KeyError("oops")

    monkeypatch.setattr(service.registry, "available", broken)
    r = client.get(f"{V1}/models", headers=A)
    assert r.status_code == 500 and error(r)["code"] == "internal_error" and "KeyError" in error(r)["message"]


def words(samples: np.ndarray, rate: int) -> int:
    """Beeps of the fake speech model: runs of loud samples."""
    loud = np.abs(samples.reshape(-1)) > 0.05
    starts = np.flatnonzero(loud[1:] & ~loud[:-1])
    gaps = np.diff(starts) > 0.03 * rate
    return int(1 + gaps.sum()) if len(starts) else 0


needs_espeak = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng is not installed")


def pcm_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32767


@needs_espeak
def test_speech_whole_file_on_a_real_model_with_voice_mapping_formats_and_refusals(client: TestClient) -> None:
    text = "red cat jumps seven. blue dog sits two."
    r = client.post(f"{V1}/audio/speech", headers=A, json={
        "model": "tiny-vits", "input": text, "voice": "alloy", "response_format": "wav", "seed": 1,
        "instructions": "cheerful"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav", r.text
    samples, rate = sf.read(io.BytesIO(r.content), always_2d=True)
    assert rate == 16000 and samples.shape[1] == 1 and len(samples) > 0.1 * rate  # the model's own rate
    warnings = r.headers["X-Genaccel-Warnings"]
    assert "instructions ignored" in warnings
    assert "voice 'alloy' is not a voice of tiny-vits; used its default 'us-male' (voices: us-male, us-female)" \
        in warnings
    job = client.get(f"/v1/jobs/{r.headers['X-Genaccel-Job-Id']}", headers=A).json()  # one job for the whole text
    assert job["request"]["prompt"] == text and job["request"]["voice"] == "us-male"
    raw = client.post(f"{V1}/audio/speech", headers=A, json={"model": "tiny-vits", "input": text, "seed": 1,
                                                             "response_format": "pcm"})
    assert raw.headers["content-type"] == "audio/pcm"
    assert "pcm resampled from tiny-vits's 16000 Hz to 24000 Hz" in raw.headers["X-Genaccel-Warnings"]
    assert abs(len(pcm_of(raw.content)) - len(samples) * 1.5) <= 2  # the same audio at 24 kHz
    fast = client.post(f"{V1}/audio/speech", headers=A, json={"model": "tiny-vits", "input": text, "seed": 1,
                                                              "speed": 2, "response_format": "flac"})
    assert abs(len(sf.read(io.BytesIO(fast.content))[0]) / len(samples) - 0.5) < 0.1
    mp3 = client.post(f"{V1}/audio/speech", headers=A, json={"model": "tiny-vits", "input": "red cat."})
    assert mp3.headers["content-type"] == "audio/mpeg" and sf.info(io.BytesIO(mp3.content)).samplerate == 16000
    for body, param, message in [
        ({"response_format": "opus"}, "response_format", "use wav, flac, mp3, pcm"),
        ({"voice": "zeus"}, "voice", "voice='zeus' is invalid: tiny-vits has no such voice; fix: use one of: "
                                     "us-male, us-female"),
        ({"speed": 3}, "speed", "speed=3.0 is invalid: must be between 0.5 and 2 for speech models"),
        ({"speed": 0.25}, "speed", "must be between 0.5 and 2 for speech models"),
        ({"speed": 9}, "speed", "must be between 0.25 and 4"),
        ({"model": "tiny-sd"}, "model", "makes image, not speech"),
        ({"response_format": "flac", "stream_format": "audio"}, "response_format", "flac cannot be streamed"),
        ({"input": "red café, naïve"}, "input", "input='red café, naïve' is invalid: has 2 character(s) outside "
                                                "tiny-vits's alphabet (letters, digits, space and . , ! ? ; : ' \" -): "
                                                "'é' at 7, 'ï' at 12; fix: spell those characters out"),
        ({"input": "red cat " * 130}, "input", "speech text must have at most 1000 characters (got 1040)"),
    ]:
        bad = client.post(f"{V1}/audio/speech", headers=A, json={"model": "tiny-vits", "input": "hi", **body})
        assert bad.status_code == 400 and error(bad)["param"] == param and message in error(bad)["message"], bad.text
    assert len(client.get("/v1/jobs", headers=A).json()["jobs"]) == 4  # the refused ones were never queued


@needs_espeak
def test_streamed_speech_is_one_job_sending_each_sentence_as_it_is_made(client: TestClient) -> None:
    text = "red cat jumps seven. blue dog sits two! green fish eats one?"
    with client.stream("POST", f"{V1}/audio/speech", headers=A, json={
            "model": "tiny-vits", "input": text, "response_format": "pcm", "stream_format": "audio", "seed": 2}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
        chunks = [pcm_of(c) for c in r.iter_bytes() if c]
    job = client.get(f"/v1/jobs/{r.headers['X-Genaccel-Job-Id']}", headers=A).json()
    assert job["state"] == "succeeded" and job["request"]["prompt"] == text
    assert len(chunks) == 3 and all(len(c) > 0.05 * 24000 for c in chunks)  # a piece per sentence, at 24 kHz
    for chunk in chunks:  # faded edges: pieces concatenated as they come join without clicks
        assert abs(chunk[0]) < 0.01 and abs(chunk[-1]) < 0.01
    whole = client.post(f"{V1}/audio/speech", headers=A, json={
        "model": "tiny-vits", "input": text, "response_format": "wav", "seed": 2, "cache": False})
    n = len(sf.read(io.BytesIO(whole.content))[0])  # the saved file joins the sentences with 10 ms crossfades
    assert abs(sum(len(c) for c in chunks) / 1.5 - n - 2 * 0.01 * 16000) < 8
    sse = client.post(f"{V1}/audio/speech", headers=A, json={
        "model": "tiny-vits", "input": text, "response_format": "wav", "stream_format": "sse", "seed": 2,
        "cache": False})  # (answered from the cache, it would be the whole file in one piece)
    events = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 3 + ["speech.audio.done"]
    wav = b"".join(base64.b64decode(e["audio"]) for e in events[:3])
    assert wav[:4] == b"RIFF" and int.from_bytes(wav[24:28], "little") == 16000  # the model's rate, in the header
    assert abs((len(wav) - 44) / 2 - sum(len(c) for c in chunks) / 1.5) < 8
    with client.stream("POST", f"{V1}/audio/speech", headers=A, json={
            "model": "tiny-vits", "input": text, "stream_format": "audio", "seed": 2, "cache": False}) as r:
        mp3 = [c for c in r.iter_bytes() if c]  # mp3, the default: frames only, so the whole stream decodes
    import av  # libsndfile estimates an MP3's length without its Info frame; players (ffmpeg) read it all

    with av.open(io.BytesIO(b"".join(mp3))) as container:
        decoded = [f for f in container.decode(audio=0)]
    assert r.headers["content-type"] == "audio/mpeg" and decoded[0].sample_rate == 16000
    assert sum(f.samples for f in decoded) >= n


@needs_espeak
def test_streamed_speech_on_the_flow_matching_model_with_its_steps(client: TestClient) -> None:
    text = "red cat jumps seven. blue dog sits two."
    with client.stream("POST", f"{V1}/audio/speech", headers=A, json={
            "model": "tiny-speech-ref", "input": text, "voice": "us-female", "steps": 3, "response_format": "wav",
            "stream_format": "audio"}) as r:
        data = [c for c in r.iter_bytes() if c]
    job = client.get(f"/v1/jobs/{r.headers['X-Genaccel-Job-Id']}", headers=A).json()
    assert job["request"]["steps"] == 3 and job["progress"]["step"] == 6 and job["request"]["voice"] == "us-female"
    wav = b"".join(data)
    assert len(data) == 2 and int.from_bytes(wav[24:28], "little") == 22050 and len(wav) > 44 + 2 * 0.1 * 22050


def test_a_model_that_does_not_stream_its_sentences_streams_its_whole_file(client: TestClient) -> None:
    """The test plugin's adapter records no sentences: its answer is one piece when the job ends."""
    with client.stream("POST", f"{V1}/audio/speech", headers=A, json={
            "model": "speech-test", "input": "One two. Three.", "response_format": "pcm",
            "stream_format": "audio"}) as r:
        chunks = [c for c in r.iter_bytes() if c]
    assert len(chunks) == 1 and words(pcm_of(chunks[0]), 24000) == 3


def test_video_create_poll_download(client: TestClient) -> None:
    r = client.post(f"{V1}/videos", headers=A, data={"prompt": "a red ball", "model": "video-test", "seconds": "2",
                                                     "size": "64x96"})
    assert r.status_code == 200, r.text
    video = r.json()
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress") and video["size"] == "64x96"
    assert r.headers["openai-poll-after-ms"]
    early = client.get(f"{V1}/videos/{video['id']}/content", headers=A)
    assert early.status_code in (200, 400)
    deadline = time.time() + 30
    while (video := client.get(f"{V1}/videos/{video['id']}", headers=A).json())["status"] != "completed":
        assert video["status"] != "failed" and time.time() < deadline, video
        time.sleep(0.05)
    assert video["progress"] == 100 and video["seconds"] == "2"
    clip = client.get(f"{V1}/videos/{video['id']}/content", headers=A)
    assert clip.headers["content-type"] == "video/mp4" and clip.content[4:8] == b"ftyp"
    import av

    with av.open(io.BytesIO(clip.content)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    assert len(frames) == 16 and frames[-1].size == (64, 96) and frames[-1].getpixel((5, 5))[0] > 200  # red
    thumb = client.get(f"{V1}/videos/{video['id']}/content", headers=A, params={"variant": "thumbnail"})
    assert thumb.headers["content-type"] == "image/png"
    sprites = client.get(f"{V1}/videos/{video['id']}/content", headers=A, params={"variant": "spritesheet"})
    assert sprites.status_code == 400 and error(sprites)["param"] == "variant"
    more = [client.post(f"{V1}/videos", headers=A, json={"prompt": f"clip {i}", "model": "video-test"}).json()["id"]
            for i in range(2)]
    page = client.get(f"{V1}/videos", headers=A, params={"limit": 2}).json()
    assert [v["id"] for v in page["data"]] == more[::-1] and page["has_more"] and page["last_id"] == more[0]
    rest = client.get(f"{V1}/videos", headers=A, params={"limit": 2, "after": page["last_id"]}).json()
    assert [v["id"] for v in rest["data"]] == [video["id"]] and not rest["has_more"]
    assert client.get(f"{V1}/videos", headers=B).json()["data"] == []  # another key's videos are not listed
    image_job = client.post(f"{V1}/images/generations", headers=A, json={"model": "noop", "prompt": "x"})
    not_video = client.get(f"{V1}/videos/{image_job.headers['X-Genaccel-Job-Id']}", headers=A)
    assert not_video.status_code == 404


def finished(client: TestClient, video: dict[str, Any]) -> dict[str, Any]:
    deadline = time.time() + 60
    while (video := client.get(f"{V1}/videos/{video['id']}", headers=A).json())["status"] != "completed":
        assert video["status"] != "failed" and time.time() < deadline, video
        time.sleep(0.05)
    return video


def clip_frames(data: bytes) -> list[Image.Image]:
    import av

    with av.open(io.BytesIO(data)) as container:
        return [f.to_image() for f in container.decode(video=0)]


def test_video_on_tiny_wan_fits_seconds_and_size_to_its_rules_and_serves_the_mp4_and_poster(
        client: TestClient) -> None:
    """OpenAI's seconds and size on a real Wan model: 1 s at 8 fps is 8 frames, rounded up to Wan's
    4k+1 (9); 60x70 to its multiples of 16 (64x64); both named in the warnings header."""
    r = client.post(f"{V1}/videos", headers=A, data={"prompt": "a red ball", "model": "tiny-wan", "seconds": "1",
                                                     "size": "60x70", "steps": "1", "seed": "3"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Genaccel-Warnings"] == ("seconds=1 rounded up to 9 frames (1.125 s at 8 fps): Wan makes 4k+1 "
                                                "frames | size=60x70 rounded to 64x64: Wan makes sizes in multiples "
                                                "of 16")
    video = finished(client, r.json())
    assert video["seconds"] == "1.125" and video["size"] == "64x64" and video["model"] == "tiny-wan"
    job = client.get(f"/v1/jobs/{video['id']}", headers=A).json()
    assert job["request"]["num_frames"] == 9 and job["request"]["steps"] == 1
    clip = client.get(f"{V1}/videos/{video['id']}/content", headers=A)
    assert clip.headers["content-type"] == "video/mp4" and clip.content[4:8] == b"ftyp"
    frames = clip_frames(clip.content)
    assert len(frames) == 9 and frames[0].size == (64, 64)
    thumb = client.get(f"{V1}/videos/{video['id']}/content", headers=A, params={"variant": "thumbnail"})
    assert thumb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)
    exact = client.post(f"{V1}/videos", headers=A, json={"prompt": "x", "model": "tiny-wan", "seconds": "1.125",
                                                         "size": "64x64", "steps": 1})
    assert "X-Genaccel-Warnings" not in exact.headers  # nothing rounded: nothing warned
    finished(client, exact.json())


def test_video_input_reference_runs_image_to_video_on_tiny_wan_i2v(client: TestClient, isolated_home: Path) -> None:
    """The upload becomes the job's first frame (the tiny model's random weights barely let it
    show in the clip, so the stored upload is what is checked)."""
    r = client.post(f"{V1}/videos", headers=A, data={"prompt": "a red ball", "model": "tiny-wan-i2v", "seconds": "1",
                                                     "size": "64x64", "steps": "1"},
                    files={"input_reference": ("first.png", png("red", 48), "image/png")})
    assert r.status_code == 200, r.text
    assert "input_reference 48x48 resized to the clip's 64x64" in r.headers["X-Genaccel-Warnings"]
    video = finished(client, r.json())
    job = client.get(f"/v1/jobs/{video['id']}", headers=A).json()
    assert job["request"]["init_image"] == "uploaded"
    (upload,) = (isolated_home / "uploads").glob("*/*")
    with Image.open(upload) as first:
        assert first.size == (48, 48) and first.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    clip = client.get(f"{V1}/videos/{video['id']}/content", headers=A)
    assert len(clip_frames(clip.content)) == 9


@pytest.mark.parametrize(("data", "files", "param", "text"), [
    ({"model": "tiny-wan"}, {"input_reference": ("in.png", png(), "image/png")}, "input_reference",
     "tiny-wan (Wan) is text-to-video only and takes no input_reference; fix: drop input_reference, or pick an "
     "image-to-video model (such as tiny-wan-i2v)"),
    ({"model": "tiny-wan-i2v"}, None, "input_reference",
     "tiny-wan-i2v (Wan image-to-video) makes a clip from an image; fix: send input_reference (the first frame) "
     "as a multipart file"),
    ({"model": "tiny-wan-i2v"}, {"input_reference": ("in.png", b"not an image", "image/png")}, "input_reference",
     "input_reference is not a readable image; fix: send a PNG, JPEG or WebP file"),
    ({"model": "tiny-wan", "seconds": "1000"}, None, "seconds",
     "seconds=1000 needs 8001 frames at 8 fps, and tiny-wan makes at most 257 frames (32.125 s) here; fix: pass "
     "seconds=32.125 or less"),
    ({"model": "tiny-wan", "seconds": "1", "num_frames": "9"}, None, "seconds",
     "seconds and num_frames were both given; fix: pass one of them"),
    ({"model": "tiny-wan", "size": "16x16"}, None, "size", "width=16 is invalid: must be between 64 and"),
    ({"model": "tiny-wan", "strength": "0.5"}, None, "strength",
     "strength=0.5 is invalid: only applies with an init image; fix: pass input_reference or drop strength"),
])
def test_video_requests_a_model_cannot_make_are_refused_in_openai_shape(
        client: TestClient, data: dict[str, Any], files: Any, param: str, text: str) -> None:
    r = client.post(f"{V1}/videos", headers=A, data={"prompt": "a ball", **data}, files=files)
    assert r.status_code == 400, r.text
    assert error(r)["param"] == param and text in error(r)["message"]
    assert client.get(f"{V1}/videos", headers=A).json()["data"] == []  # nothing was queued


def test_a_video_above_the_memory_budget_is_refused_in_this_endpoints_words(isolated_home: Path) -> None:
    """The adapter's own refusal, with its CLI flags turned into the parameters a client sends."""
    app, engine = make_app(isolated_home, job_memory_gb=0.0001)
    try:
        r = TestClient(app).post(f"{V1}/videos", headers=A, json={"prompt": "x", "model": "tiny-wan", "seconds": 1})
    finally:
        engine.dispatcher.stop(timeout=10)
        unregister_plugins()
    assert r.status_code == 400 and error(r)["param"] == "seconds"
    assert "a 9-frame 64x64 clip needs about" in error(r)["message"]
    assert error(r)["message"].endswith("fix: lower seconds, size (or raise GENACCEL_JOB_MEMORY_GB on a larger "
                                        "worker)")


def test_seconds_on_a_fixed_length_model_round_up_to_whole_windows(isolated_home: Path) -> None:
    from genaccel.api.openai.video_fit import fit_seconds, video_kind

    settings = Settings(home=isolated_home)
    info = ModelRegistry(settings).resolve("tiny-latte")
    kind = video_kind(info)
    assert kind is not None
    warnings: list[str] = []
    assert fit_seconds(kind, info, 4, 8.0, settings, warnings) == 32 and not warnings  # 8 + 6 x 4
    assert fit_seconds(kind, info, 1.6, 8.0, settings, warnings) == 16
    assert warnings == ["seconds=1.6 rounded up to 16 frames (2 s at 8 fps): Latte makes 8 + 4k frames (windows of "
                        "8 overlapping by 4)"]
