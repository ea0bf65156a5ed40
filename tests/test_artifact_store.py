"""Artifacts in an S3-compatible object store, against a real S3 HTTP server (moto's standalone
server, started here as its own process): keys from the job id, re-runs overwrite, the API
streams what workers uploaded, and several processes with separate folders share nothing but
Redis and the bucket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from genaccel.api import Backend, create_app
from genaccel.artifacts.storage import S3Artifacts
from genaccel.settings import Settings
from pipelines.engine import LocalEngine
from pipelines.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    name = f"ga-{uuid.uuid4().hex[:10]}"
    S3Artifacts(f"s3://{name}", s3_endpoint).client.create_bucket(Bucket=name)
    return name


def test_keys_come_from_the_job_id_and_a_rerun_overwrites(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = S3Artifacts(f"s3://{bucket}/outputs", s3_endpoint)
    file = tmp_path / "abc-0.png"
    file.write_bytes(b"first")
    location = store.put("job1", file, "image/png")
    assert location == f"s3://{bucket}/outputs/job1/abc-0.png" and store.exists(location)
    file.write_bytes(b"second")  # the same job run again after its worker died
    assert store.put("job1", file, "image/png") == location
    assert store.list_job("job1") == ["outputs/job1/abc-0.png"]
    assert b"".join(store.open(location)) == b"second"
    assert store.remove_job("job1") == 1 and not store.exists(location)
    with pytest.raises(FileNotFoundError):
        b"".join(store.open(location))


def test_embedded_jobs_upload_and_the_api_streams_them(s3_endpoint: str, bucket: str, isolated_home: Path) -> None:
    settings = Settings(home=isolated_home, default_model="tiny-sd", artifact_store=f"s3://{bucket}/a",
                        s3_endpoint_url=s3_endpoint, rate_limit_per_min=0)
    engine = LocalEngine(settings, scoped=False)
    engine.dispatcher.start()
    try:
        client = TestClient(create_app(Backend(settings, engine.store, engine.dispatcher,
                                               ModelRegistry(settings, allow_paths=False))))
        job_id = client.post("/v1/jobs", json={"prompt": "a cat", "steps": 2, "seed": 3, "num_outputs": 2}).json()["id"]
        job = engine.wait([job_id])[0]
        assert job.state == "succeeded", job.error
        assert [a.path for a in job.artifacts] == [f"s3://{bucket}/a/{job_id}/{job_id[:12]}-{i}.png" for i in (0, 1)]
        store = S3Artifacts(f"s3://{bucket}/a", s3_endpoint)
        assert sorted(store.list_job(job_id)) == sorted(f"a/{job_id}/{job_id[:12]}-{i}.{ext}"
                                                        for i in (0, 1) for ext in ("png", "json"))
        assert not list((isolated_home / "staging").rglob("*.*"))  # nothing left on this disk
        view = client.get(f"/v1/jobs/{job_id}").json()
        for art in view["artifacts"]:
            got = client.get(art["url"])
            assert got.status_code == 200 and got.headers["content-type"] == "image/png"
            assert got.content == b"".join(store.open(f"s3://{bucket}/a/{job_id}/{art['name']}"))
            assert client.get(art["sidecar_url"]).json()["job_id"] == job_id
    finally:
        engine.dispatcher.stop(timeout=10)


@pytest.mark.redis
@pytest.mark.slow
def test_api_and_two_workers_in_separate_processes_share_only_redis_and_the_bucket(
        s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    from tests.test_celery import REDIS_URL, _redis_or_skip

    _redis_or_skip()
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    base = {**{k: v for k, v in os.environ.items() if not k.startswith("GENACCEL_")}, **CREDENTIALS,
            "GENACCEL_REDIS_URL": REDIS_URL, "GENACCEL_REDIS_PREFIX": f"ga-{tag}", "HF_HUB_OFFLINE": "1",
            "GENACCEL_ARTIFACT_STORE": f"s3://{bucket}/x", "GENACCEL_S3_ENDPOINT_URL": s3_endpoint,
            "GENACCEL_DEFAULT_MODEL": "tiny-sd", "GENACCEL_ROUTES": f'{{"tiny-sd": "q-{tag}"}}',
            "GENACCEL_RATE_LIMIT_PER_MIN": "0", "OMP_NUM_THREADS": "1"}
    procs = []
    try:
        for i in range(2):
            env = {**base, "GENACCEL_HOME": str(tmp_path / f"worker{i}")}
            procs.append(subprocess.Popen([sys.executable, "-m", "genaccel.cli", "worker", "--device", f"cpu:{i}",
                                           "--queues", f"q-{tag}", "--loglevel", "WARNING"], env=env, cwd=ROOT,
                                          start_new_session=True))
        env = {**base, "GENACCEL_HOME": str(tmp_path / "api")}
        procs.append(subprocess.Popen([sys.executable, "-m", "genaccel.cli", "serve", "--port", str(port)],
                                      env=env, cwd=ROOT, start_new_session=True))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=90)
        ids = [httpx.post(f"{url}/v1/jobs", json={"prompt": f"a cat {i}", "steps": 2, "seed": i}).json()["id"]
               for i in range(4)]
        deadline, jobs = time.time() + 180, []
        while time.time() < deadline:
            jobs = [httpx.get(f"{url}/v1/jobs/{i}").json() for i in ids]
            if all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs):
                break
            time.sleep(0.3)
        assert [j["state"] for j in jobs] == ["succeeded"] * 4, jobs
        for job in jobs:
            (art,) = job["artifacts"]
            got = httpx.get(art["url"])
            assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
            assert httpx.get(art["sidecar_url"]).json()["job_id"] == job["id"]
        assert not list((tmp_path / "api").rglob("*.png"))  # the API's disk holds no artifact
        assert not any(list((tmp_path / f"worker{i}").rglob("*.png")) for i in range(2))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in [*r.scan_iter(f"ga-{tag}:*"), *r.scan_iter(f"*q-{tag}*")]:
            r.delete(key)
