"""One worker per device: the start-up self-check of ``genaccel worker``.

Two checks, because each sees what the other cannot:

- an exclusive ``fcntl.flock`` on ``GENACCEL_HOME/run/worker-<host>-<device>.lock``. The kernel
  drops it when the last process holding the file ends, however it ends, so it never goes stale.
  The launcher takes it and hands the open file to its child: an orphaned child keeps its device
  taken until it has really stopped.
- a device heartbeat in Redis, ``<prefix>:device:<host>:<device>``, that the running worker
  refreshes every ``heartbeat_s / 3`` and that expires after ``heartbeat_s``. It sees a worker of
  another ``GENACCEL_HOME`` on this host that shares the Redis store. A heartbeat whose process
  is gone (a ``kill -9``ed worker) is ignored.

Device names: ``cpu``, ``cpu:N`` (several CPU workers on one host: one name each), ``cuda``,
``cuda:N`` (N counts the launcher's ``CUDA_VISIBLE_DEVICES`` when set, as CUDA does; the lock is
on the physical GPU), ``mps``.

Why our own: Celery knows nothing of devices, and no well-kept library gives a per-device
singleton that survives SIGKILL; ``flock`` and one Redis key with a TTL do it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from genaccel.errors import GenAccelError

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")
_RELEASE_IF_OURS = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['pid'] == tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DeviceTaken(GenAccelError):
    """Another live worker on this host already serves the device."""

    code = "device_taken"
    exit_code = 2


def device_key(device: str, env: Mapping[str, str] | None = None) -> str:
    """The host-wide name of the device ``device`` takes: ``cpu:N``, ``cuda:<physical id>``, ``mps:0``.

    Example:
        >>> device_key("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,3"})
        'cuda:3'
    """
    env = os.environ if env is None else env
    match = _DEVICE.match(device.strip())
    if match is None:
        raise GenAccelError(f"--device {device!r} is invalid: not a device name; fix: pass cpu, cpu:N, cuda:N or mps")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "mps" and index:
        raise GenAccelError(f"--device {device!r} is invalid: there is one MPS device; fix: pass mps")
    if kind != "cuda":
        return f"{kind}:{index}"
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if "CUDA_VISIBLE_DEVICES" not in env:
        return f"cuda:{index}"
    if index >= len(visible):
        raise GenAccelError(f"--device {device!r} is invalid: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} "
                            f"shows {len(visible)} GPU(s); fix: pass cuda:0..cuda:{max(0, len(visible) - 1)}")
    return f"cuda:{visible[index]}"


@dataclass(frozen=True)
class Holder:
    """Who serves a device: the worker process, its launcher and its Celery name."""

    pid: int
    launcher: int | None
    name: str

    def describe(self) -> str:
        launcher = f", launcher pid {self.launcher}" if self.launcher and self.launcher != self.pid else ""
        return f"pid {self.pid}{launcher}, {self.name}"

    def alive(self) -> bool:
        return _alive(self.pid)

    @classmethod
    def parse(cls, text: str | None) -> Holder | None:
        try:
            data = json.loads(text or "")
            return cls(int(data["pid"]), data.get("launcher"), str(data.get("name", "")))
        except (ValueError, KeyError, TypeError):
            return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host; a zombie (exited, not yet reaped: a killed worker whose new
    parent reaps late) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def taken(device: str, key: str, holder: Holder | None) -> DeviceTaken:
    name = device if device == key else f"{device} ({key})"
    who = f" ({holder.describe()})" if holder else ""
    return DeviceTaken(f"device {name} is already served by another worker on this host{who}; "
                       "fix: stop it, or pass another --device")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace(":", ""))


class DeviceLock:
    """An exclusive ``flock`` on the device's lock file, held as long as any process keeps ``fd`` open."""

    def __init__(self, fd: int, key: str) -> None:
        self.fd, self.key = fd, key

    @staticmethod
    def path(home: Path, key: str) -> Path:
        return home / "run" / f"worker-{_safe(socket.gethostname())}-{_safe(key)}.lock"

    @classmethod
    def acquire(cls, home: Path, device: str, key: str) -> DeviceLock:
        """Take the lock; ``DeviceTaken`` naming the holder when another process has it."""
        path = cls.path(home, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise taken(device, key, Holder.parse(text)) from None
        return cls(fd, key)

    def record(self, holder: Holder) -> None:
        """Write who holds the lock into its file (read by a refused worker's message)."""
        data = json.dumps(asdict(holder)).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class DeviceHeartbeat:
    """The device's heartbeat key in Redis (see the module docstring).

    Args:
        url: Redis URL of the job store.
        prefix: the store's key prefix (``Settings.redis_prefix``).
        ttl_s: seconds the key lives after each refresh (``Settings.heartbeat_s``).
        device: the device's key (``device_key``).
    """

    def __init__(self, url: str, prefix: str, ttl_s: float, device: str) -> None:
        import redis

        self.key = f"{prefix}:device:{socket.gethostname()}:{device}"
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
        self._stop = threading.Event()
        self._holder: Holder | None = None

    def holder(self) -> Holder | None:
        """The live worker that heartbeats for this device, if any."""
        found = Holder.parse(cast(str | None, self._redis.get(self.key)))
        return found if found is not None and found.alive() else None

    def claim(self, holder: Holder) -> Holder | None:
        """Start heartbeating for ``holder``; returns the other live holder instead when there is one."""
        value = json.dumps(asdict(holder))
        if not self._redis.set(self.key, value, px=self.ttl_ms, nx=True):
            other = self.holder()
            if other is not None and other.pid != holder.pid:
                return other
            self._redis.set(self.key, value, px=self.ttl_ms)
        self._holder = holder
        threading.Thread(target=self._beat, args=(value,), name="genaccel-device-beat", daemon=True).start()
        return None

    def _beat(self, value: str) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self._redis.set(self.key, value, px=self.ttl_ms)
            except Exception as exc:  # Redis away for a moment: the worker's own heartbeat says the same
                log.warning("device heartbeat failed: %s", exc)

    def release(self) -> None:
        """Stop heartbeating and delete the key if it is still ours."""
        self._stop.set()
        if self._holder is not None:
            with contextlib.suppress(Exception):
                self._redis.eval(_RELEASE_IF_OURS, 1, self.key, self._holder.pid)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._redis.close()
