"""``genaccel worker``: one Celery worker process per device, each ending with its launcher.

The launcher itself never imports torch. It takes each device for this host
(``workers/device_lock.py``: a second worker on the same device is refused), starts one child
process per device (``solo`` pool, one job at a time, ``CUDA_VISIBLE_DEVICES`` narrowed to its
GPU), forwards SIGINT and SIGTERM to them as SIGTERM (Celery's warm shutdown: the running job
finishes, its message is acknowledged; a Ctrl-C in a terminal already reaches the children, and a
second SIGINT would be Celery's cold shutdown), and exits when they have.

A child ends with its launcher however the launcher ends, SIGKILL included
(``workers/lifeline.py``: parent-death signal and watchdog pipe). An orphaned child takes no new
job; its running job stops at its next step and goes back to the queue (``WorkerRuntime.interrupt``),
so it runs to the end once, elsewhere. A child still running ``Settings.orphan_grace_s`` after
(a model still loading) exits hard, and another worker's recovery sweep re-queues its job.

The launcher does not ``exec`` the worker when it serves one device: one process tree for any
number of devices keeps one behaviour to test, and the lifeline makes the tree safe to kill.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from genaccel.errors import GenAccelError
from genaccel.settings import Settings
from workers.device_lock import DeviceHeartbeat, DeviceLock, DeviceTaken, Holder, device_key, taken
from workers.lifeline import Lifeline

log = logging.getLogger("genaccel.worker")


def child_env(device: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker process serving ``device`` (from ``base``, default ours)."""
    env = dict(os.environ if base is None else base)
    kind, _, index = device_key(device, env).partition(":")
    if kind == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = index
        env["GENACCEL_DEVICE"] = "cuda"
    else:
        env["GENACCEL_DEVICE"] = kind
    return env


def worker_name(device: str, launcher_pid: int) -> str:
    return f"genaccel-{device.replace(':', '')}-{launcher_pid}@{socket.gethostname()}"


def take_devices(settings: Settings, devices: Sequence[str]) -> list[DeviceLock]:
    """The start-up self-check: lock each device, or raise ``DeviceTaken`` naming the other worker."""
    keys = [device_key(d) for d in devices]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise GenAccelError(f"--device {devices[i]!r} is invalid: it names {key} a second time; "
                                "fix: pass each device once")
    locks: list[DeviceLock] = []
    try:
        for device, key in zip(devices, keys, strict=True):
            locks.append(DeviceLock.acquire(settings.home, device, key))
            other = _live_holder(settings, key)
            if other is not None:
                raise taken(device, key, other)
    except BaseException:
        for lock in locks:
            lock.close()
        raise
    return locks


def _live_holder(settings: Settings, key: str) -> Holder | None:
    """The live worker whose device heartbeat names ``key``; ``None`` (with a warning) when Redis
    does not answer: the lock file still guards this ``GENACCEL_HOME``."""
    import redis

    assert settings.redis_url
    beat = DeviceHeartbeat(settings.redis_url, settings.redis_prefix, settings.heartbeat_s, key)
    try:
        return beat.holder()
    except redis.RedisError as exc:
        log.warning("device heartbeat of %s not checked: Redis did not answer (%s)", key, exc)
        return None
    finally:
        beat.close()


def _hold_device(settings: Settings, key: str, holder: Holder, lock_fd: int | None) -> DeviceHeartbeat | None:
    """In the child: keep the launcher's lock (or take it), record ``holder`` in it and start the
    device heartbeat; ``DeviceTaken`` when another live worker heartbeats for ``key``."""
    import redis

    lock = DeviceLock(lock_fd, key) if lock_fd is not None else DeviceLock.acquire(settings.home, key, key)
    lock.record(holder)  # its descriptor stays open as long as this process lives
    assert settings.redis_url
    beat = DeviceHeartbeat(settings.redis_url, settings.redis_prefix, settings.heartbeat_s, key)
    try:
        other = beat.claim(holder)
    except redis.RedisError as exc:
        log.warning("device heartbeat of %s not started: Redis did not answer (%s)", key, exc)
        beat.close()
        return None
    if other is not None:
        beat.close()
        raise taken(key, key, other)
    return beat


def launch(redis_url: str, devices: Sequence[str], queues: Sequence[str], loglevel: str = "INFO") -> int:
    """Start and supervise one worker process per device; returns the worst exit code.
    ``DeviceTaken`` (exit 2) when another live worker on this host serves one of ``devices``."""
    settings = Settings(redis_url=redis_url)
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)  # before any child exists: no signal can orphan one
    signal.signal(signal.SIGINT, forward)
    locks = take_devices(settings, devices)
    launcher = os.getpid()
    read_end, write_end = os.pipe()  # the watchdog: children read end-of-file once this process is gone
    try:
        for device, lock in zip(devices, locks, strict=True):
            name = worker_name(device, launcher)
            lock.record(Holder(launcher, launcher, name))
            env = child_env(device)
            env["GENACCEL_REDIS_URL"] = redis_url
            cmd = [sys.executable, "-m", "workers.main", "--queues", ",".join(queues), "--name", name,
                   "--loglevel", loglevel, "--device-key", lock.key, "--launcher-pid", str(launcher),
                   "--watchdog-fd", str(read_end), "--lock-fd", str(lock.fd)]
            children.append(subprocess.Popen(cmd, env=env, pass_fds=(read_end, lock.fd)))
    finally:
        os.close(read_end)
    code = max(child.wait() for child in children)
    os.close(write_end)
    for lock in locks:
        lock.close()
    return code


def run_one(queues: str, name: str, loglevel: str, *, device_key: str | None = None,
            launcher_pid: int | None = None, watchdog_fd: int | None = None, lock_fd: int | None = None) -> int:
    """Inside the child: a solo-pool Celery worker bound to this process's runtime, tied to its
    launcher (when started by one) and holding its device (when given one)."""
    settings = Settings()
    for fd in (watchdog_fd, lock_fd):  # not to be inherited by what this worker starts
        if fd is not None:
            os.set_inheritable(fd, False)
    lifeline = Lifeline(launcher_pid, watchdog_fd) if launcher_pid else None
    if lifeline is not None:
        lifeline.arm(lambda reason: _stop_orphan(settings, reason))
    beat = None
    if device_key is not None:
        beat = _hold_device(settings, device_key, Holder(os.getpid(), launcher_pid, name), lock_fd)

    from celery import signals

    from workers.tasks import runtime, worker_app

    app = worker_app(settings)

    @signals.worker_ready.connect(weak=False)
    def ready(**_: object) -> None:
        runtime(settings).start(app)

    @signals.worker_shutting_down.connect(weak=False)
    def shutting_down(**_: object) -> None:  # inside Celery's signal handler: set flags only
        if lifeline is not None and lifeline.orphaned():
            runtime(settings).interrupt(f"its launcher (pid {launcher_pid}) is gone")

    @signals.worker_shutdown.connect(weak=False)
    def shutdown(**_: object) -> None:
        runtime(settings).stop()

    try:
        code = app.worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q", queues, "-n", name,
                                "--without-gossip", "--without-mingle", "--without-heartbeat",
                                f"--loglevel={loglevel}"])
    finally:
        if beat is not None:
            beat.release()
    return int(code or 0)


def _stop_orphan(settings: Settings, reason: str) -> None:
    """In the lifeline's thread once the launcher is gone: stop soon, and for sure."""
    from workers.tasks import runtime

    grace = settings.orphan_grace_s
    log.warning("%s: taking no new job; a running job goes back to the queue at its next step "
                "(exiting within %g s)", reason, grace)
    rt = runtime(settings)
    rt.interrupt(reason)
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown; before Celery runs, the default: exit
    time.sleep(grace)
    sent = rt.rescue()
    log.error("%s and this worker is still running after %g s; exiting now (dispatched again: %s; a job "
              "still running is re-queued by another worker's recovery sweep)", reason, grace,
              ", ".join(sent) or "none")
    os._exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m workers.main", description="One Celery worker process "
                                "(normally started by `genaccel worker`).")
    p.add_argument("--queues", default="image")
    p.add_argument("--name", default=f"genaccel@{socket.gethostname()}")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--device-key", help="Host-wide device name to hold (cpu:0, cuda:3...): one worker each.")
    p.add_argument("--launcher-pid", type=int, help="End with this process (the launcher).")
    p.add_argument("--watchdog-fd", type=int, help="Read end of the launcher's watchdog pipe.")
    p.add_argument("--lock-fd", type=int, help="Device lock file already locked by the launcher.")
    a = p.parse_args(argv)
    try:
        return run_one(a.queues, a.name, a.loglevel, device_key=a.device_key, launcher_pid=a.launcher_pid,
                       watchdog_fd=a.watchdog_fd, lock_fd=a.lock_fd)
    except DeviceTaken as exc:
        print(f"genaccel: error: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
