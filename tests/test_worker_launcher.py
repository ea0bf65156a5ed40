"""`genaccel worker` and `genaccel jobs` in the distributed shape (issue 14): children end with their
launcher however it ends, one worker per device, the jobs commands read the configured store, and a
worker killed over and over loses no job and runs none twice (a reduced ``bench/kill_workers.py``).

Tests without the ``redis`` marker need neither Redis nor torch; the others use the server at
``GENACCEL_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) under a private key prefix.
"""

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

import psutil
import pytest
import redis

from genaccel.cli import main
from genaccel.errors import GenAccelError
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from genaccel.store.redis import RedisStore
from workers.device_lock import DeviceLock, DeviceTaken, Holder, device_key
from workers.main import child_env, take_devices

REDIS_URL = os.environ.get("GENACCEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); scripts/test.sh starts one")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


# -- device names, locks, lifeline: no Redis ----------------------------------------------------

@pytest.mark.parametrize(("device", "env", "key"), [
    ("cpu", {}, "cpu:0"), ("cpu:1", {}, "cpu:1"), ("cuda", {}, "cuda:0"), ("cuda:1", {}, "cuda:1"),
    ("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,3"}, "cuda:3"), ("mps", {}, "mps:0"),
])
def test_device_key_names_the_physical_device(device: str, env: dict[str, str], key: str) -> None:
    assert device_key(device, env) == key


@pytest.mark.parametrize(("device", "env", "message"), [
    ("gpu0", {}, r"--device 'gpu0' is invalid: not a device name; fix: pass cpu, cpu:N, cuda:N or mps"),
    ("cuda:2", {"CUDA_VISIBLE_DEVICES": "4,5"}, r"shows 2 GPU\(s\); fix: pass cuda:0..cuda:1"),
    ("mps:1", {}, r"there is one MPS device"),
])
def test_bad_device_names_are_refused(device: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(GenAccelError, match=message):
        device_key(device, env)


def test_child_env_narrows_cuda_and_names_cpu_slots() -> None:
    env = child_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,3", "PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["GENACCEL_DEVICE"] == "cuda" and env["PATH"] == "/bin"
    assert child_env("cpu:1", {})["GENACCEL_DEVICE"] == "cpu"


def test_device_lock_refuses_a_second_holder_until_the_first_ends(tmp_path: Path) -> None:
    lock = DeviceLock.acquire(tmp_path, "cpu", "cpu:0")
    lock.record(Holder(4242, 4240, "genaccel-cpu-4240@host"))
    with pytest.raises(DeviceTaken, match=r"device cpu \(cpu:0\) is already served by another worker on this host "
                       r"\(pid 4242, launcher pid 4240, genaccel-cpu-4240@host\); fix: stop it, or pass another "
                       r"--device"):
        DeviceLock.acquire(tmp_path, "cpu", "cpu:0")
    DeviceLock.acquire(tmp_path, "cpu:1", "cpu:1").close()  # another device is free
    lock.close()
    DeviceLock.acquire(tmp_path, "cpu", "cpu:0").close()


def test_device_lock_is_freed_by_sigkill(tmp_path: Path) -> None:
    code = (f"from pathlib import Path; from workers.device_lock import DeviceLock; "
            f"DeviceLock.acquire(Path({str(tmp_path)!r}), 'cpu', 'cpu:0'); print('held', flush=True); "
            "import time; time.sleep(60)")
    holder = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    with pytest.raises(DeviceTaken):
        DeviceLock.acquire(tmp_path, "cpu", "cpu:0")
    holder.kill()
    holder.wait()
    DeviceLock.acquire(tmp_path, "cpu", "cpu:0").close()


def test_one_launcher_refuses_the_same_device_twice(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(GenAccelError, match=r"--device 'cpu:0' is invalid: it names cpu:0 a second time"):
        take_devices(settings, ["cpu", "cpu:0"])


_CHILD = """
import os, sys, time
from workers.lifeline import Lifeline
line = Lifeline(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
line.arm(lambda reason: (print("orphaned:", reason, flush=True), os._exit(0)))
print("armed", os.getpid(), flush=True)
time.sleep(60)
"""


def test_watchdog_pipe_reports_the_launcher_gone() -> None:
    read_end, write_end = os.pipe()
    child = subprocess.Popen([PY, "-c", _CHILD, str(os.getpid()), str(read_end)], cwd=ROOT, pass_fds=(read_end,),
                             stdout=subprocess.PIPE, text=True)
    os.close(read_end)
    assert child.stdout is not None and child.stdout.readline().startswith("armed")
    os.close(write_end)  # what the launcher's death does
    assert child.wait(10) == 0
    assert child.stdout.read().strip() == f"orphaned: its launcher (pid {os.getpid()}) is gone"


def test_parent_death_signal_ends_the_child_of_a_sigkilled_launcher() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    launcher = (f"import os, subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', {_CHILD!r}, "
                "str(os.getpid())]); time.sleep(60)")
    proc = subprocess.Popen([PY, "-c", launcher], cwd=ROOT, start_new_session=True)
    _wait(lambda: psutil.Process(proc.pid).children(), 20, "the child did not start")
    child = psutil.Process(proc.pid).children()[0]
    time.sleep(1.0)  # armed (no pipe: only the parent-death signal ties it)
    proc.kill()
    proc.wait()
    _wait(lambda: _gone(child.pid), 10, "the child outlived its SIGKILLed launcher")


def test_a_child_whose_launcher_is_already_gone_exits_at_once() -> None:
    done = subprocess.run([PY, "-c", _CHILD, "1"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "launcher pid 1 is gone before this worker started" in done.stderr


# -- with Redis ----------------------------------------------------------------------------------

class Workers:
    """Launchers on a private queue, key prefix and home."""

    def __init__(self, home: Path) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.queue = f"test-{self.tag}"
        self.prefix = f"ga-{self.tag}"
        self.home = home
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GENACCEL_")},
            "GENACCEL_HOME": str(home), "GENACCEL_REDIS_URL": REDIS_URL, "GENACCEL_REDIS_PREFIX": self.prefix,
            "GENACCEL_HEARTBEAT_S": "2", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
        }
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.launchers: list[subprocess.Popen[str]] = []

    def start(self, device: str, **env: str) -> subprocess.Popen[str]:
        cmd = [PY, "-m", "genaccel.cli", "worker", "--device", device, "--queues", self.queue, "--loglevel", "WARNING"]
        p = subprocess.Popen(cmd, env={**self.env, **env}, cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.launchers.append(p)
        return p

    def child_of(self, launcher: subprocess.Popen[str], timeout: float = 60) -> int:
        """The launcher's worker process, once it heartbeats."""
        found: list[int] = []

        def ready() -> bool:
            kids = psutil.Process(launcher.pid).children()
            found[:] = [k.pid for k in kids if self.redis.exists(f"{self.prefix}:worker:{os.uname().nodename}:"
                                                                  f"{k.pid}:celery")]
            assert launcher.poll() is None, launcher.stderr.read() if launcher.stderr else ""
            return bool(found)

        _wait(ready, timeout, "the worker did not heartbeat")
        return found[0]

    def close(self) -> None:
        for p in self.launchers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for key in [*self.redis.scan_iter(f"{self.prefix}:*"), *self.redis.scan_iter(f"*{self.queue}*")]:
            self.redis.delete(key)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    _redis_or_skip()
    w = Workers(tmp_path / "home")
    try:
        yield w
    finally:
        w.close()


@pytest.mark.redis
@pytest.mark.slow
def test_worker_ends_when_its_launcher_is_sigkilled(workers: Workers) -> None:
    launcher = workers.start("cpu")
    child = workers.child_of(launcher)
    device = f"{workers.prefix}:device:{os.uname().nodename}:cpu:0"
    assert json.loads(workers.redis.get(device) or "{}")["pid"] == child
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    _wait(lambda: _gone(child), 15, "the worker outlived its SIGKILLed launcher")
    assert not workers.redis.exists(device)  # an orphan that stopped cleanly frees its device heartbeat
    again = workers.start("cpu")  # and the device lock
    workers.child_of(again)


@pytest.mark.redis
@pytest.mark.slow
def test_a_second_worker_on_the_same_device_is_refused(workers: Workers, tmp_path: Path) -> None:
    first = workers.start("cpu")
    child = workers.child_of(first)
    fix = "fix: stop it, or pass another --device"
    # the same home: the lock file refuses it
    same = subprocess.run([PY, "-m", "genaccel.cli", "worker", "--device", "cpu:0", "--queues", workers.queue],
                          env=workers.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert same.returncode == 2, same.stderr
    lines = same.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genaccel: error: device cpu:0 is already served")
    assert f"pid {child}" in lines[0] and f"launcher pid {first.pid}" in lines[0] and lines[0].endswith(fix)
    # another home sharing the Redis store: the device heartbeat refuses it
    other = subprocess.run([PY, "-m", "genaccel.cli", "worker", "--device", "cpu", "--queues", workers.queue],
                           env={**workers.env, "GENACCEL_HOME": str(tmp_path / "other")}, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and f"pid {child}" in other.stderr and fix in other.stderr
    # another device starts
    second = workers.start("cpu:1")
    assert workers.child_of(second) != child


@pytest.mark.redis
def test_jobs_commands_use_the_configured_redis_store(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    _redis_or_skip()
    prefix = f"ga-jobs-{uuid.uuid4().hex[:10]}"
    store = RedisStore(REDIS_URL, prefix=prefix)
    try:
        first = store.create(JobRequest(prompt="a red circle", model="noop"))
        second = store.create(JobRequest(prompt="a blue square", model="noop"))
        monkeypatch.setenv("GENACCEL_REDIS_PREFIX", prefix)
        monkeypatch.setenv("GENACCEL_REDIS_URL", REDIS_URL)
        assert main(["jobs", "list", "--json"]) == 0
        assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [second.id, first.id]
        assert main(["jobs", "show", first.id]) == 0
        assert json.loads(capsys.readouterr().out)["request"]["prompt"] == "a red circle"
        assert main(["jobs", "cancel", first.id]) == 0
        assert capsys.readouterr().out.strip() == f"{first.id}: cancelled"
        assert store.get(first.id).state == "cancelled"
        monkeypatch.delenv("GENACCEL_REDIS_URL")  # --redis names the store instead
        assert main(["jobs", "list", "--state", "queued", "--json", "--redis", REDIS_URL]) == 0
        assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [second.id]
        assert main(["jobs", "show", "missing", "--redis", REDIS_URL]) == 1
        assert "job 'missing' does not exist" in capsys.readouterr().err
        assert not (isolated_home / "jobs.db").exists()  # SQLite was never opened
    finally:
        for key in store._redis.scan_iter(f"{prefix}:*"):
            store._redis.delete(key)
        store.close()


@pytest.mark.redis
@pytest.mark.slow
def test_kill_workers_again_and_again_loses_nothing(tmp_path: Path) -> None:
    """The issue's kill test, reduced: SIGKILL the launcher alone, then launcher and child, mid-job, with
    the artifacts in an S3-compatible server."""
    _redis_or_skip()
    out = tmp_path / "kill.json"
    done = subprocess.run([PY, "bench/kill_workers.py", "--jobs", "3", "--kills", "2", "--steps", "6",
                           "--interval", "0", "--redis", REDIS_URL, "--json", str(out), "--s3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(out.read_text())
    assert (s["kills"], s["kills_launcher_only"], s["kills_mid_step"]) == (2, 1, 2), s
    assert s["succeeded"] == 3 and s["lost"] == 0 and s["ran_twice"] == 0, s
    assert s["duplicate_artifact_sets"] == 0 and s["missing_artifacts"] == 0 and s["stray_files"] == [], s
    assert s["orphans"] == 0 and s["requeued_by_orphan"] >= 1, s
