"""The official ``openai`` client against genaccel: a live ``genaccel serve`` (embedded shape) and
the Celery + Redis deployment (``test_celery.py`` runs ``exercise`` on its cluster), with the same
calls: an image as b64 and as a url, an edit,
speech on the real ``tiny-vits`` (whole and streamed), a video on the real ``tiny-wan`` (polled,
downloaded, its poster); a bad size, an unknown model and a missing key raise the
client's BadRequestError, NotFoundError and AuthenticationError. And the README's snippet runs
as written against the embedded default."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from genaccel.api import create_app
from genaccel.refdata.speech import available as espeak_available
from genaccel.service.auth import digest
from genaccel.settings import Settings
from tests.test_openai_api import PLUGINS, png, unregister_plugins
from tests.test_serve import free_port, wait_up

openai = pytest.importorskip("openai")
ROOT = Path(__file__).resolve().parents[1]
KEY = "ga_test_openai_key"


def exercise(base: str) -> None:
    """Every call of the issue through the official client, against the server at ``base``."""
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)
    ids = {m.id for m in client.models.list().data}
    assert {"noop", "tiny-sd", "tiny-vits", "tiny-wan"} <= ids
    got = client.images.generate(model="noop", prompt="a cat", size="64x64", response_format="b64_json",
                                 extra_body={"seed": 3, "steps": 1})
    assert Image.open(io.BytesIO(base64.b64decode(got.data[0].b64_json or ""))).size == (64, 64)
    got = client.images.generate(model="noop", prompt="a cat", response_format="url", n=2)
    assert len(got.data) == 2
    fetched = httpx.get(got.data[1].url or "")  # a signed link: no key needed
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    raw = client.images.with_raw_response.generate(model="noop", prompt="a cat", quality="hd")
    assert "quality ignored" in raw.headers["x-genaccel-warnings"]
    edit = client.images.edit(model="tiny-sd", image=("in.png", png("red"), "image/png"), prompt="a blue square",
                              size="64x64", extra_body={"steps": 2, "strength": 0.5, "seed": 1})
    assert Image.open(io.BytesIO(base64.b64decode(edit.data[0].b64_json or ""))).size == (64, 64)
    text = "red cat jumps seven. blue dog sits two."
    speech = client.audio.speech.with_raw_response.create(model="tiny-vits", voice="alloy", input=text,
                                                          response_format="wav", extra_body={"seed": 1})
    samples, rate = sf.read(io.BytesIO(speech.content), always_2d=True)
    assert rate == 16000 and len(samples) > 0.2 * rate
    assert "used its default 'us-male'" in speech.headers["x-genaccel-warnings"]
    with client.audio.speech.with_streaming_response.create(
            model="tiny-vits", voice="us-male", input=text, response_format="pcm", stream_format="audio",
            extra_body={"seed": 1, "cache": False}) as streamed:
        pieces = [piece for piece in streamed.iter_bytes() if piece]
    pcm = np.frombuffer(b"".join(pieces), "<i2")  # two sentences, each faded at its edges, at 24 kHz
    assert abs(len(pcm) / 1.5 - len(samples) - 0.01 * 16000) < 8
    video = client.videos.create_and_poll(model="tiny-wan", prompt="a red ball", seconds="1", size="64x64",
                                          extra_body={"steps": 1, "seed": 2},
                                          poll_interval_ms=100)  # type: ignore[arg-type]
    assert video.status == "completed" and video.seconds == "1.125" and video.size == "64x64", video  # 9 frames
    clip = client.videos.download_content(video.id).content
    assert clip[4:8] == b"ftyp"
    thumb = client.videos.download_content(video.id, variant="thumbnail").content
    assert Image.open(io.BytesIO(thumb)).size == (64, 64)
    raw_video = client.videos.with_raw_response.create(model="tiny-wan", prompt="a blue ball", seconds="4",
                                                       extra_body={"steps": 1})  # type: ignore[arg-type]
    assert "seconds=4 rounded up to 33 frames" in raw_video.headers["x-genaccel-warnings"]
    with pytest.raises(openai.BadRequestError, match="text-to-video only") as refused:
        client.videos.create(model="tiny-wan", prompt="a ball", input_reference=("in.png", png("red"), "image/png"))
    assert refused.value.param == "input_reference"  # type: ignore[attr-defined]
    listed = [v.id for v in client.videos.list(limit=1)]  # pages through both, one at a time
    assert len(listed) == 2 and listed[1] == video.id
    with pytest.raises(openai.BadRequestError, match="must be WIDTHxHEIGHT") as bad:
        client.images.generate(model="noop", prompt="a cat", size="big")  # type: ignore[arg-type]
    assert bad.value.param == "size"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError, match="no such model"):
        client.audio.speech.create(model="tts-9", voice="alloy", input="hi")
    with pytest.raises(openai.AuthenticationError, match="unknown API key"):  # e.g. a key of OpenAI's own
        openai.OpenAI(base_url=base, api_key="sk-an-openai-key", max_retries=0).images.generate(prompt="a cat")
    no_header = openai.OpenAI(base_url=base, api_key="x", max_retries=0, default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError, match="missing API key"):
        no_header.models.list()


@pytest.mark.slow
def test_the_openai_client_against_genaccel_serve(isolated_home: Path) -> None:
    port = free_port()
    env = {**os.environ, "GENACCEL_HOME": str(isolated_home), "GENACCEL_DEFAULT_MODEL": "tiny-sd",
           "HF_HUB_OFFLINE": "1", "GENACCEL_PLUGINS": json.dumps(PLUGINS),
           "GENACCEL_API_KEYS": json.dumps([digest(KEY)])}
    command = [sys.executable, "-m", "genaccel.cli", "serve", "--port", str(port), "--no-ui"]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        exercise(f"http://127.0.0.1:{port}/openai/v1")
    finally:
        proc.kill()  # its shutdown is tested in test_serve.py
        proc.wait(30)


class ThreadServer:
    """An app on a local port, served by uvicorn in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.server.config.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(from openai import OpenAI\n.*?)```", text, re.S)
    assert found, "the README has no openai snippet"
    return found[1]


def test_the_readme_snippet_runs_against_the_embedded_default(isolated_home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``genaccel serve`` builds it with no settings (SQLite, worker threads, no keys); the
    default model is swapped for ``noop`` to keep the test cheap."""
    from genaccel.serve import build_backend

    monkeypatch.chdir(isolated_home.parent)
    backend, stop = build_backend(Settings(home=isolated_home, default_model="noop"))
    try:
        with ThreadServer(create_app(backend)) as url:
            code = readme_snippet().replace("http://127.0.0.1:8000", url)
            namespace: dict[str, Any] = {}
            exec(compile(code, "README.md", "exec"), namespace)
    finally:
        stop(5)
    assert Image.open(isolated_home.parent / "out.png").size == (64, 64)


def test_a_client_that_hangs_up_cancels_its_job(isolated_home: Path) -> None:
    from genaccel.serve import build_backend
    from genaccel.store.sqlite import SQLiteStore

    backend, stop = build_backend(Settings(home=isolated_home, default_model="noop", plugins=PLUGINS))
    try:
        with ThreadServer(create_app(backend)) as url:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url + "/openai/v1/audio/speech", json={"model": "speech-test", "input": "hi", "steps": 200},
                           timeout=httpx.Timeout(10, read=0.5))
            store = SQLiteStore(isolated_home / "jobs.db")
            deadline = time.time() + 20
            while not (job := store.list_jobs(limit=1).jobs[0]).done:
                assert time.time() < deadline, job
                time.sleep(0.05)
    finally:
        stop(5)
    assert job.state == "cancelled" and job.progress.step < 200


@pytest.mark.skipif(not espeak_available(), reason="libespeak-ng is not installed")
def test_a_stream_the_client_leaves_cancels_its_job(isolated_home: Path) -> None:
    """Audio flows once the first sentence is made, while the job goes on; leaving stops the job."""
    from genaccel.serve import build_backend
    from genaccel.store.sqlite import SQLiteStore

    backend, stop = build_backend(Settings(home=isolated_home, default_model="noop"))
    text = " ".join(["red cat jumps seven."] * 6)
    try:
        with ThreadServer(create_app(backend)) as url, httpx.stream("POST", url + "/openai/v1/audio/speech", json={
                "model": "tiny-speech-ref", "input": text, "steps": 200, "stream_format": "audio",
                "response_format": "pcm"}) as r:
            first = next(r.iter_bytes())
        store = SQLiteStore(isolated_home / "jobs.db")
        deadline = time.time() + 20
        while not (job := store.list_jobs(limit=1).jobs[0]).done:
            assert time.time() < deadline, job
            time.sleep(0.05)
    finally:
        stop(5)
    assert first and store.list_jobs(limit=10).jobs == [job]  # one job for the whole text
    assert job.state == "cancelled" and 200 <= job.progress.step < 1200
    assert len(job.metadata["audio_chunks"]) < 6


@pytest.fixture(autouse=True)
def _no_leftover_adapters() -> Iterator[None]:
    yield
    unregister_plugins()
