"""``genaccel worker``: one Celery worker process per device.

The launcher itself never imports torch: it starts one child process per device (``solo``
pool, one job at a time, ``CUDA_VISIBLE_DEVICES`` narrowed to its GPU), forwards SIGINT/SIGTERM
to them (Celery's warm shutdown: the running job finishes, its message is acknowledged), and
exits when they have.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from genaccel.settings import Settings


def child_env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    if device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        env["GENACCEL_DEVICE"] = "cuda"
    else:
        env["GENACCEL_DEVICE"] = device
    return env


def launch(redis_url: str, devices: Sequence[str], queues: Sequence[str], loglevel: str = "INFO") -> int:
    """Start and supervise one worker process per device; returns the worst exit code."""
    children = []
    for device in devices:
        env = child_env(device)
        env["GENACCEL_REDIS_URL"] = redis_url
        cmd = [sys.executable, "-m", "workers.main", "--queues", ",".join(queues), "--name",
               f"genaccel-{device.replace(':', '')}-{os.getpid()}@{socket.gethostname()}", "--loglevel", loglevel]
        children.append(subprocess.Popen(cmd, env=env))

    def forward(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)


def run_one(queues: str, name: str, loglevel: str) -> None:
    """Inside the child: a solo-pool Celery worker bound to this process's runtime."""
    from celery import signals

    from workers.tasks import runtime, worker_app

    settings = Settings()
    app = worker_app(settings)

    @signals.worker_ready.connect(weak=False)
    def ready(**_: object) -> None:
        runtime(settings).start(app)

    @signals.worker_shutdown.connect(weak=False)
    def shutdown(**_: object) -> None:
        runtime(settings).stop()

    app.worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q", queues, "-n", name,
                     "--without-gossip", "--without-mingle", "--without-heartbeat", f"--loglevel={loglevel}"])


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--queues", default="image")
    p.add_argument("--name", default=f"genaccel@{socket.gethostname()}")
    p.add_argument("--loglevel", default="INFO")
    a = p.parse_args()
    run_one(a.queues, a.name, a.loglevel)
