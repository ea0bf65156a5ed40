"""The distributed shape for real: Redis store, Celery broker on Redis, two `genaccel worker`
processes running tiny-sd, the API in front (no eager mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from genaccel.api import Backend, create_app
from genaccel.settings import Settings
from genaccel.store.redis import RedisStore
from pipelines.registry import ModelRegistry

REDIS_URL = os.environ.get("GENACCEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
pytestmark = [pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("tests.plugins.sine", "tests.plugins.speech", "tests.plugins.video")
ROUTED = ("tiny-sd", "sine-test", "noop", "speech-test", "video-test", "tiny-vits", "tiny-wan")
"""Models whose jobs go to the cluster's private queue (the OpenAI-compatible tests use the last five)."""


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); scripts/test.sh starts one")


class Cluster:
    """Two worker processes on a private queue and key prefix, and the API on top."""

    def __init__(self, home: Path, plugins: tuple[str, ...] = (),
                 models: tuple[str, ...] = ("tiny-sd", "sine-test")) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.queue = f"test-{self.tag}"
        routes = {name: self.queue for name in models}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GENACCEL_")},
            "GENACCEL_HOME": str(home), "GENACCEL_REDIS_URL": REDIS_URL, "GENACCEL_REDIS_PREFIX": f"ga-{self.tag}",
            "GENACCEL_DEFAULT_MODEL": "tiny-sd", "GENACCEL_HEARTBEAT_S": "2",
            "GENACCEL_ROUTES": json.dumps(routes), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "GENACCEL_PLUGINS": json.dumps(list(plugins)),
        }
        self.settings = Settings(home=home, redis_url=REDIS_URL, redis_prefix=f"ga-{self.tag}",
                                 default_model="tiny-sd", heartbeat_s=2, routes=routes,
                                 rate_limit_per_min=0, plugins=list(plugins))
        self.store = RedisStore(REDIS_URL, prefix=f"ga-{self.tag}", heartbeat_ttl_s=2)
        from workers.dispatch import CeleryDispatcher

        self.dispatcher = CeleryDispatcher(self.settings, self.store)
        backend = Backend(self.settings, self.store, self.dispatcher, ModelRegistry(self.settings, allow_paths=False))
        self.client = TestClient(create_app(backend))
        self.launchers: list[subprocess.Popen[bytes]] = []

    def start_worker(self, device: str) -> None:
        """One launcher; each takes its own device name (a second worker on one device is refused)."""
        cmd = [sys.executable, "-m", "genaccel.cli", "worker", "--device", device, "--queues", self.queue,
               "--loglevel", "WARNING"]
        self.launchers.append(subprocess.Popen(cmd, env=self.env, cwd=ROOT, start_new_session=True))

    def wait_ready(self, n: int, timeout: float = 90) -> None:
        """Until ``n`` worker processes heartbeat."""
        r = redis.Redis.from_url(REDIS_URL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(list(r.scan_iter(f"ga-{self.tag}:worker:*"))) >= n:
                return
            time.sleep(0.2)
        raise AssertionError("workers did not start")

    def submit(self, **body: Any) -> str:
        r = self.client.post("/v1/jobs", json={"prompt": "a cat", **body})
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/jobs/{job_id}").json())

    def wait(self, job_id: str, until: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached the expected state: {self.job(job_id)}")

    def done(self, job_id: str) -> dict[str, Any]:
        return self.wait(job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"))

    def close(self) -> None:
        for p in self.launchers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        r = redis.Redis.from_url(REDIS_URL)
        for key in [*r.scan_iter(f"ga-{self.tag}:*"), *r.scan_iter(f"*{self.queue}*")]:
            r.delete(key)
        self.store.close()
        from pipelines.modality import ADAPTERS

        for name in ("sine", "test-speech", "test-video"):  # the rest of the suite runs without the test modalities
            ADAPTERS.adapters.pop(name, None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _redis_or_skip()
    c = Cluster(tmp_path_factory.mktemp("celery-home"), plugins=PLUGINS, models=ROUTED)
    c.start_worker("cpu:0")
    c.start_worker("cpu:1")
    try:
        c.wait_ready(2)
        yield c
    finally:
        c.close()


def test_a_second_modality_runs_on_a_worker_to_a_wav_with_its_sidecar(cluster: Cluster) -> None:
    """The modality contract across processes: the sine-tone test adapter (a plugin) on the Redis
    store and a Celery worker, fetched through the API."""
    import io

    import soundfile as sf

    job_id = cluster.submit(prompt="an A4 tone", modality="music", model="sine-test", duration=0.25, seed=5)
    job = cluster.done(job_id)
    assert job["state"] == "succeeded", job["error"]
    (art,) = job["artifacts"]
    assert art["media_type"] == "audio/wav" and art["sample_rate"] == 16000 and art["duration_s"] == 0.25
    samples, rate = sf.read(io.BytesIO(cluster.client.get(art["url"]).content))
    assert rate == 16000 and samples.shape == (4000,)
    sidecar = cluster.client.get(art["sidecar_url"]).json()
    assert sidecar["request"]["prompt"] == "an A4 tone" and sidecar["job_id"] == job_id


def test_submit_over_http_runs_on_a_worker(cluster: Cluster) -> None:
    job = cluster.done(cluster.submit(steps=2, seed=7))
    assert job["state"] == "succeeded", job["error"]
    assert job["metadata"]["device"] == "cpu"
    got = cluster.client.get(job["artifacts"][0]["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert b"Seed: 7" in got.content  # the A1111 parameters chunk travels with the file


def test_cancel_running_stops_within_a_step_and_queued_never_starts(cluster: Cluster) -> None:
    long = cluster.submit(steps=200)
    running = cluster.wait(long, lambda j: j["progress"]["step"] >= 2)
    cancelled = cluster.client.post(f"/v1/jobs/{long}/cancel").json()
    assert cancelled["cancel_requested"]
    final = cluster.done(long)
    assert final["state"] == "cancelled"
    assert final["progress"]["step"] <= cancelled["progress"]["step"] + 1 < 200
    assert running["attempts"] == 1
    # a queued job cancelled before any worker reaches it never starts
    blockers = [cluster.submit(steps=60) for _ in range(2)]
    queued = cluster.submit(steps=2)
    assert cluster.client.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "cancelled"
    for b in blockers:
        cluster.done(b)
    time.sleep(0.5)
    after = cluster.job(queued)
    assert after["state"] == "cancelled" and after["attempts"] == 0 and after["started_at"] is None


def test_priority_order_is_honoured(cluster: Cluster) -> None:
    blockers = [cluster.submit(steps=80, priority=9) for _ in range(2)]  # both workers busy
    for b in blockers:
        cluster.wait(b, lambda j: j["state"] == "running")
    low = cluster.submit(steps=1, priority=1)
    high = cluster.submit(steps=1, priority=8)
    lo, hi = cluster.done(low), cluster.done(high)
    assert lo["state"] == hi["state"] == "succeeded"
    assert hi["started_at"] < lo["started_at"]


def test_kill_9_worker_mid_job_reruns_elsewhere_once(cluster: Cluster) -> None:
    job_id = cluster.submit(steps=150, seed=11)
    running = cluster.wait(job_id, lambda j: j["state"] == "running" and j["progress"]["step"] >= 3)
    worker = cluster.store.get(job_id).worker
    assert worker is not None
    os.kill(int(worker.split(":")[1]), signal.SIGKILL)
    final = cluster.done(job_id, )
    assert final["state"] == "succeeded", final["error"]
    assert final["attempts"] == 2 and running["attempts"] == 1
    assert cluster.store.get(job_id).worker != worker
    assert "died" in " ".join(final["metadata"]["requeued"])
    outputs = sorted(p.name for p in cluster.settings.outputs.glob(f"{job_id[:12]}-*.png"))
    assert outputs == [f"{job_id[:12]}-0.png"]  # exactly one set of artifacts


def test_the_openai_client_against_celery_and_redis(cluster: Cluster) -> None:
    """The same calls as against `genaccel serve` (tests/test_openai_client.py), here through the
    Redis store and Celery workers, with an API key configured."""
    from genaccel.api import Backend, create_app
    from genaccel.service.auth import digest
    from tests.test_openai_client import KEY, ThreadServer, exercise

    settings = cluster.settings.model_copy(update={"api_keys": [digest(KEY)]})
    backend = Backend(settings, cluster.store, cluster.dispatcher, ModelRegistry(settings, allow_paths=False))
    with ThreadServer(create_app(backend)) as url:
        exercise(url + "/openai/v1")
