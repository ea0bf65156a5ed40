"""`genaccel serve` as a process: starts, serves, refuses to expose itself without keys, and on
SIGTERM lets the running job finish (or puts it back in the queue) before it exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from genaccel.cli import main
from genaccel.service.auth import digest
from genaccel.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(home: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GENACCEL_HOME": str(home), "GENACCEL_DEFAULT_MODEL": "tiny-sd", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "genaccel.cli", "serve", "--port", str(port), *extra],
                            env=env, cwd=ROOT, stderr=subprocess.PIPE)


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not come up")


@pytest.mark.slow
def test_serve_runs_jobs_and_shuts_down_gracefully(isolated_home: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(isolated_home, port, "--grace", "0.5")
    try:
        wait_up(url, proc)
        job = httpx.post(url + "/v1/jobs", json={"prompt": "a cat", "steps": 200}).json()
        deadline = time.time() + 60
        while httpx.get(f"{url}/v1/jobs/{job['id']}").json()["progress"]["step"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "listening on this machine only" in stderr
    store = SQLiteStore(isolated_home / "jobs.db")
    back = store.get(job["id"])  # still running after the grace period: back in the queue, not lost
    assert back.state == "queued" and "server shut down" in back.metadata["requeued"][0]


def test_serve_refuses_to_expose_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "without keys; fix: set GENACCEL_API_KEYS" in capsys.readouterr().err


def test_keys_new_prints_a_key_and_its_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new"]) == 0
    out = capsys.readouterr().out.split()
    key, dig = out[1], out[3]
    assert key.startswith("ga_") and digest(key) == dig


def test_worker_needs_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker"]) == 2
    assert "no Redis URL" in capsys.readouterr().err
