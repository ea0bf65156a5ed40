"""Web UI (ui/): views, signed links, job operations, the Blocks with and without API keys, and the
mounted app served by uvicorn, driven through gradio_client."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
import uvicorn
from gradio_client import Client
from PIL import Image

from genaccel.api import Backend, create_app
from genaccel.errors import InvalidRequest, JobNotFound
from genaccel.profiles import PROFILES
from genaccel.serve import mount_web_ui
from genaccel.service.auth import AuthError, digest
from genaccel.settings import Limits, Settings
from genaccel.spec import Job, JobRequest, Progress
from pipelines.engine import LocalEngine
from pipelines.registry import ModelRegistry
from ui import render
from ui.app import build_ui
from ui.jobs import UIJobs, optional_number
from ui.links import FileLinks

KEY_A, KEY_B = "key-alice", "key-bob"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_backend(settings: Settings, *, run: bool = True) -> tuple[Backend, LocalEngine]:
    engine = LocalEngine(settings, scoped=False)
    if run:
        engine.dispatcher.start()
    return Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings, allow_paths=False)), engine


@contextmanager
def running_app(settings: Settings) -> Iterator[str]:
    """The API with the web UI mounted (as `genaccel serve` does), on a free port; yields its URL."""
    backend, engine = make_backend(settings)
    app = create_app(backend)
    assert mount_web_ui(app, backend, log=lambda _: None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        engine.dispatcher.stop(timeout=15)


def _job(**update: Any) -> Job:
    return Job(request=JobRequest(prompt="<b>cat</b>", model="tiny-sd"), **update)


def test_views_escape_user_text_and_show_progress() -> None:
    now = 1000.0
    running = _job(state="running", started_at=now - 10, progress=Progress(step=5, total=20))
    text = render.progress_html(running)
    assert "step 5 of 20" in text and "ETA: measuring" in text
    clock = render.EtaClock()
    assert clock.left(running, now=now) is None  # first sighting: no rate yet
    assert clock.left(running.model_copy(update={"progress": Progress(step=7, total=20)}), now=now + 1) == 6.5
    assert "ETA 6.5 s" in render.progress_html(running, eta_s=6.5)
    assert "stopping" in render.progress_html(running.model_copy(update={"cancel_requested": True}))
    queued = _job()
    assert "2 job(s) ahead" in render.progress_html(queued, queue_position=2)
    assert render.history_rows([queued], positions={queued.id: 2})[0][2] == "2 ahead"
    rows = render.history_rows([running], now=now)
    assert rows[0][:3] == [running.id[:8], "running", "5/20"] and rows[0][-1] == "<b>cat</b>"
    assert "&lt;script&gt;" in render.error_html("<script>x</script>")
    assert "No benchmark" in render.profile_markdown(PROFILES["max"], {})
    assert "Measured speed-up: shapes-sd ×2.1, tiny-sd ×1.8" in render.profile_markdown(
        PROFILES["fast"], {"tiny-sd": 1.8, "shapes-sd": 2.1})


def test_file_links_are_signed_per_file_and_expire() -> None:
    links = FileLinks("/ui/files", secret=b"s" * 32, ttl_s=60)
    url = links.url("job1", "a.png", now=1000)
    assert links.url("job1", "a.png", now=1019) == url  # stable while a view is re-rendered
    path, _, query = url.partition("?")
    assert path == "/ui/files/job1/a.png"
    args = dict(p.split("=") for p in query.split("&"))
    assert links.check("job1", "a.png", int(args["exp"]), args["sig"], now=1000)
    assert not links.check("job1", "b.png", int(args["exp"]), args["sig"], now=1000)  # another file
    assert not links.check("job2", "a.png", int(args["exp"]), args["sig"], now=1000)  # another job
    assert args["exp"] == "1080" and links.check("job1", "a.png", 1080, args["sig"], now=1079)
    assert not links.check("job1", "a.png", 1080, args["sig"], now=1081)  # expired
    assert not FileLinks("/ui/files").check("job1", "a.png", int(args["exp"]), args["sig"], now=1000)  # other secret


def test_optional_numbers_and_upload_limit(settings: Settings, tmp_path: Path) -> None:
    assert optional_number("seed", "") is None and optional_number("seed", " 42 ", integer=True) == 42
    assert optional_number("guidance", "7.5") == 7.5
    with pytest.raises(InvalidRequest, match=r"seed='abc' is invalid: is not a number"):
        optional_number("seed", "abc", integer=True)
    with pytest.raises(InvalidRequest, match="must be a whole number; fix: type 2"):
        optional_number("width", "1.5", integer=True)
    small = Settings(home=settings.home, default_model="tiny-sd", limits=Limits(init_image_max_bytes=100))
    backend, _ = make_backend(small, run=False)
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64), "red").save(big)
    jobs = UIJobs(backend)
    with pytest.raises(InvalidRequest, match=r"init_image='\d+ bytes' is invalid: the limit is 100 bytes"):
        jobs.submit({"prompt": "a cat"}, "local", upload=str(big))
    with pytest.raises(InvalidRequest, match="must be a base64 data URL, not a path"):
        jobs.submit({"prompt": "a cat", "init_image": str(big)}, "local")  # a path from a client is refused
    backend, _ = make_backend(settings, run=False)
    job = UIJobs(backend).submit({"prompt": "a cat", "strength": 0.5}, "local", upload=str(big))
    stored = Path(job.request.params.init_image or "")
    assert stored.parent == settings.home / "uploads" / "local" and stored.read_bytes() == big.read_bytes()


def test_rerun_keeps_the_seed_vary_changes_it_and_owners_are_separate(isolated_home: Path) -> None:
    settings = Settings(home=isolated_home, default_model="tiny-sd", api_keys=[digest(KEY_A), digest(KEY_B)])
    backend, _ = make_backend(settings, run=False)
    jobs = UIJobs(backend)
    alice, bob = jobs.owner(KEY_A), jobs.owner(KEY_B)
    first = jobs.submit({"prompt": "a cat", "steps": 3, "seed": 9}, alice)
    again, varied = jobs.rerun(first, alice), jobs.vary(first, alice)
    assert again.request == first.request and again.id != first.id
    assert varied.request.params.seed != 9 and varied.request.prompt == "a cat" and varied.request.params.steps == 3
    assert [j.id for j in jobs.history(alice)] == [varied.id, again.id, first.id] and jobs.history(bob) == []
    with pytest.raises(JobNotFound):
        jobs.cancel(first.id, bob)
    with pytest.raises(AuthError, match="unknown API key"):
        jobs.owner("nope")


@pytest.mark.parametrize("keys", [False, True])
def test_ui_builds_with_and_without_api_keys(settings: Settings, keys: bool) -> None:
    if keys:
        settings = Settings(home=settings.home, default_model="tiny-sd", api_keys=[digest(KEY_A)])
    backend, _ = make_backend(settings, run=False)
    blocks = build_ui(backend)
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["api-key-row"].visible is keys  # type: ignore[attr-defined]
    assert {"image-prompt", "image-generate", "image-stop", "history-table", "compare-go"} <= by_id.keys()
    assert {"video-prompt", "video-frames", "video-fps"} <= by_id.keys()  # the video tab serves the tiny models
    from pipelines.modality import served_modalities

    for modality in sorted({"video", "speech", "music"} - set(served_modalities())):
        assert f"no {modality} pipeline is available" in by_id[f"{modality}-unavailable"].value  # type: ignore[attr-defined]
    assert {"music-prompt", "music-duration", "music-loudness", "music-fade", "music-format"} <= by_id.keys()
    labels = {b.label for b in blocks.blocks.values() if isinstance(b, gr.Tab)}
    assert labels == {"Image", "Video", "Speech", "Music", "Queue & history", "Side by side"}


def _wait(client: Client, job_id: str, key: str, until: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
          step: int = 0) -> dict[str, Any]:
    deadline = time.time() + 60
    while time.time() < deadline:
        job = client.predict(job_id, key, api_name="/job")
        if job["state"] in until or (step and job["progress"]["step"] >= step):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stuck: {job}")


@pytest.mark.slow
def test_gradio_client_against_the_served_app(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gradio_cache = isolated_home / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_cache))
    settings = Settings(home=isolated_home, default_model="tiny-sd", api_keys=[digest(KEY_A), digest(KEY_B)],
                        limits=Limits(init_image_max_bytes=20_000))
    with running_app(settings) as url:
        assert httpx.get(url + "/ui/").status_code == 200
        client = Client(url + "/ui/", verbose=False)
        assert "missing API key" in client.predict({"prompt": "a cat"}, "", api_name="/submit")["error"]["message"]
        bad = client.predict({"prompt": "a cat", "steps": 999}, KEY_A, api_name="/submit")["error"]
        assert bad["field"] == "steps" and "between 1 and 200" in bad["message"]

        job = client.predict({"prompt": "a cat", "steps": 2, "seed": 3}, KEY_A, api_name="/submit")
        done = _wait(client, job["id"], KEY_A)
        assert done["state"] == "succeeded" and done["parameters"]["seed"] == 3
        (art,) = done["artifacts"]
        image = httpx.get(url + art["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)
        assert "attachment" in httpx.get(url + art["download"]).headers["content-disposition"]
        assert httpx.get(url + art["url"].replace("sig=", "sig=0")).status_code == 403

        # each key sees only its own jobs; outputs are not in Gradio's cache nor served by its file route
        assert client.predict(job["id"], KEY_B, api_name="/job")["error"]["code"] == "job_not_found"
        assert client.predict(KEY_B, 20, api_name="/history")["jobs"] == []
        assert [j["id"] for j in client.predict(KEY_A, 20, api_name="/history")["jobs"]] == [job["id"]]
        cached = [p.read_bytes() for p in gradio_cache.rglob("*") if p.is_file()]
        assert image.content not in cached
        path = next((isolated_home / "outputs").glob("*.png"))
        assert httpx.get(f"{url}/ui/gradio_api/file={path}").status_code in (403, 404)

        # uploads above the limit are refused by Gradio's upload route
        big = httpx.post(url + "/ui/gradio_api/upload", files={"files": ("big.png", b"x" * 30_000, "image/png")})
        assert big.status_code == 413

        long = client.predict({"prompt": "long", "steps": 200, "width": 256, "height": 256}, KEY_A,
                              api_name="/submit")
        _wait(client, long["id"], KEY_A, step=1)
        assert client.predict(long["id"], KEY_A, api_name="/cancel")["cancel_requested"] is True
        stopped = _wait(client, long["id"], KEY_A)
        assert stopped["state"] == "cancelled" and stopped["progress"]["step"] < 200
