"""REST API on the embedded shape (SQLite + worker threads + tiny-sd), through FastAPI's client."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from genaccel.api import Backend, create_app
from genaccel.service.auth import digest
from genaccel.settings import Settings
from pipelines.engine import LocalEngine
from pipelines.registry import ModelRegistry

KEY_A, KEY_B = "key-alice", "key-bob"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


def make_client(settings: Settings, *, run: bool = True) -> tuple[TestClient, LocalEngine]:
    engine = LocalEngine(settings, scoped=False)
    if run:
        engine.dispatcher.start()
    backend = Backend(settings, engine.store, engine.dispatcher, ModelRegistry(settings, allow_paths=False))
    return TestClient(create_app(backend)), engine


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    c, engine = make_client(settings)
    yield c
    engine.dispatcher.stop(timeout=10)


@pytest.fixture
def idle(isolated_home: Path) -> Iterator[TestClient]:
    """Keys for two users, and no worker running: jobs stay queued."""
    settings = Settings(home=isolated_home, default_model="tiny-sd", api_keys=[digest(KEY_A), digest(KEY_B)],
                        max_queued_per_key=3)
    c, _ = make_client(settings, run=False)
    yield c


def wait_done(client: TestClient, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.time() + 120
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_submit_run_and_download(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"prompt": "a cat", "steps": 2, "seed": 3})
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_done(client, r.json()["id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == {"step": 2, "total": 2}
    assert job["request"]["model"] == "tiny-sd" and job["request"]["seed"] == 3
    (art,) = job["artifacts"]
    got = client.get(art["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(got.content))
    assert image.size == (64, 64)
    assert image.text["parameters"].startswith("a cat\nSteps: 2")  # type: ignore[attr-defined]


def test_idempotency_key_and_put_create_one_job(idle: TestClient) -> None:
    body = {"prompt": "a cat", "steps": 2}
    first = idle.post("/v1/jobs", json=body, headers={**A, "Idempotency-Key": "k1"})
    again = idle.post("/v1/jobs", json=body, headers={**A, "Idempotency-Key": "k1"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = idle.post("/v1/jobs", json=body, headers={**B, "Idempotency-Key": "k1"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]  # keys are per owner
    put1 = idle.put("/v1/jobs/client-id-0001", json=body, headers=A)
    put2 = idle.put("/v1/jobs/client-id-0001", json=body, headers=A)
    assert (put1.status_code, put2.status_code) == (202, 200) and put1.json()["id"] == "client-id-0001"
    taken = idle.put("/v1/jobs/client-id-0001", json=body, headers=B)
    assert taken.status_code == 409 and "taken" in taken.json()["error"]["message"]
    bad = idle.put("/v1/jobs/x", json=body, headers=A)
    assert bad.status_code == 422 and "8-64 characters" in bad.json()["error"]["message"]
    assert len(idle.get("/v1/jobs", headers=A).json()["jobs"]) == 2


def test_auth_and_ownership(idle: TestClient) -> None:
    missing = idle.get("/v1/jobs")
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = idle.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "unknown API key" in wrong.json()["error"]["message"]
    job = idle.post("/v1/jobs", json={"prompt": "a cat"}, headers=A).json()
    assert idle.get(f"/v1/jobs/{job['id']}", headers=B).status_code == 404
    assert idle.post(f"/v1/jobs/{job['id']}/cancel", headers=B).status_code == 404
    assert idle.get("/v1/jobs", headers=B).json()["jobs"] == []
    assert idle.get("/healthz").status_code == 200  # no key needed


def test_cancel_queued_job_never_starts_and_finished_is_409(idle: TestClient) -> None:
    job = idle.post("/v1/jobs", json={"prompt": "a cat"}, headers=A).json()
    assert job["state"] == "queued" and job["queue_position"] == 0
    r = idle.post(f"/v1/jobs/{job['id']}/cancel", headers=A)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    again = idle.post(f"/v1/jobs/{job['id']}/cancel", headers=A)
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    assert idle.get("/v1/jobs/doesnotexist", headers=A).status_code == 404


def test_queue_position_and_listing(idle: TestClient) -> None:
    ids = [idle.post("/v1/jobs", json={"prompt": f"p{i}", "priority": p}, headers=A).json()["id"]
           for i, p in enumerate([5, 5, 9])]
    positions = [idle.get(f"/v1/jobs/{i}", headers=A).json()["queue_position"] for i in ids]
    assert positions == [1, 2, 0]  # priority first, then age
    page = idle.get("/v1/jobs?limit=2", headers=A).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2] and page["next_cursor"]
    rest = idle.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}", headers=A).json()
    assert [j["id"] for j in rest["jobs"]] == [ids[0]] and rest["next_cursor"] is None
    assert idle.get("/v1/jobs?state=succeeded", headers=A).json()["jobs"] == []
    bad = idle.get("/v1/jobs?cursor=abc", headers=A)
    assert bad.status_code == 422 and "cursor" in bad.json()["error"]["message"]
    bad_state = idle.get("/v1/jobs?state=bogus", headers=A)
    assert bad_state.status_code == 422 and bad_state.json()["error"]["field"] == "state"


def test_queued_cap_is_429(idle: TestClient) -> None:
    for i in range(3):
        assert idle.post("/v1/jobs", json={"prompt": f"p{i}"}, headers=A).status_code == 202
    r = idle.post("/v1/jobs", json={"prompt": "one more"}, headers=A)
    assert r.status_code == 429 and "cap is 3" in r.json()["error"]["message"]
    assert int(r.headers["Retry-After"]) >= 1
    assert idle.post("/v1/jobs", json={"prompt": "bob's"}, headers=B).status_code == 202


def test_rate_limit_is_429_with_retry_after(isolated_home: Path) -> None:
    c, _ = make_client(Settings(home=isolated_home, rate_limit_per_min=3), run=False)
    codes = [c.get("/v1/models").status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    r = c.get("/v1/models")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "requests a minute" in r.json()["error"]["message"]


def test_bad_requests_are_422_with_the_fix(idle: TestClient) -> None:
    cases = [
        ({"prompt": "a cat", "steps": -1}, "steps=-1 is invalid"),
        ({"prompt": ""}, "give a non-empty prompt"),
        ({"prompt": "a cat", "width": 100}, "multiple of 8"),
        ({"prompt": "a cat", "model": "/etc"}, "arbitrary paths are not served"),
        ({"prompt": "a cat", "model": "nope"}, "no such model"),
        ({"prompt": "a cat", "colour": "red"}, "unknown field"),
        ({"prompt": "a cat", "init_image": "/etc/passwd"}, "must be a base64 data URL"),
        ({"prompt": "a cat", "init_image": "data:image/png;base64,AAAA"}, "not a readable image"),
    ]
    for body, needle in cases:
        r = idle.post("/v1/jobs", json=body, headers=A)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.json()["error"]["message"], (body, r.json())
    r = idle.post("/v1/jobs", content=b"[1, 2]", headers={**A, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_init_image_data_url_is_stored_under_uploads(idle: TestClient, isolated_home: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = idle.post("/v1/jobs", json={"prompt": "a cat", "init_image": url, "strength": 0.5}, headers=A)
    assert r.status_code == 202, r.text
    assert r.json()["request"]["init_image"] == "uploaded"  # no server path leaks
    assert len(list((isolated_home / "uploads").rglob("*.png"))) == 1


def test_request_too_large_is_413(isolated_home: Path) -> None:
    c, _ = make_client(Settings(home=isolated_home, max_request_bytes=1000), run=False)
    r = c.post("/v1/jobs", json={"prompt": "x" * 2000})
    assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        yield b"x" * 2000
        yield b'"}'
    streamed = c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_artifact_names_are_looked_up_not_joined(client: TestClient) -> None:
    job = wait_done(client, client.post("/v1/jobs", json={"prompt": "a cat", "steps": 1}).json()["id"])
    for name in ["..%2F..%2Fjobs.db", "x.png", "%2Fetc%2Fpasswd"]:
        assert client.get(f"/v1/artifacts/{job['id']}/{name}").status_code == 404


def test_events_stream_and_resume(client: TestClient) -> None:
    job = wait_done(client, client.post("/v1/jobs", json={"prompt": "a cat", "steps": 2}).json()["id"])
    text = client.get(f"/v1/jobs/{job['id']}/events").text
    names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert names == ["queued", "started", "progress", "succeeded"]
    progress = json.loads(text.split("event: progress\ndata: ", 1)[1].split("\n", 1)[0])
    assert progress["step"] == 2 and progress["preview"].startswith("data:image/png;base64,")  # a step preview
    ids = [int(line.split(": ", 1)[1]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == sorted(ids)
    resumed = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[1])}).text
    assert [line for line in resumed.splitlines() if line.startswith("event: ")] == [
        "event: progress", "event: succeeded"]


def test_catalogue_health_and_metrics(client: TestClient) -> None:
    wait_done(client, client.post("/v1/jobs", json={"prompt": "a cat", "steps": 1}).json()["id"])
    names = {m["name"] for m in client.get("/v1/models").json()}
    assert {"tiny-sd", "tiny-dit"} <= names
    assert "off" in {p["name"] for p in client.get("/v1/profiles").json()}
    assert client.get("/healthz").json()["status"] == "ok"
    text = client.get("/metrics").text
    assert 'genaccel_jobs{state="succeeded"} 1' in text
    assert "genaccel_queue_depth 0" in text and 'genaccel_job_seconds_bucket{le="+Inf"} 1' in text
    assert "genaccel_worker_busy_seconds{worker=" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]
