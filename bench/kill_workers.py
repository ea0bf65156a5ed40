#!/usr/bin/env python
"""Kill test (issue 14): a worker killed with SIGKILL over and over loses no job, runs none to the
end twice and leaves no process behind.

    python bench/kill_workers.py --jobs 20 --kills 10 --json bench/results/kill-workers.json

One ``genaccel worker --device cpu`` serves a private queue of ``--jobs`` tiny-sd jobs. Once its
worker has taken a job's first step (the model is loaded), a random 0..``--interval`` seconds
pass, and at the next moment a job is mid-way the worker is killed with SIGKILL: by turns
(``--mode alternate``) the launcher alone (its child must stop by itself) and the launcher with its
child (the process group). A new launcher is started at once, and again every ``--restart-delay``
seconds while the old child still holds the device (those refusals are counted). After ``--kills`` kills the last worker
finishes the queue and is stopped with SIGTERM. Counted at the end:

- lost: jobs not ``succeeded``;
- ran twice: jobs run to the end more than once (the store refuses the second finish, and the
  worker logs that the job is "already succeeded");
- duplicate artifact sets: jobs with more files than outputs; stray files: files in the output
  folder that are no job's artifact (e.g. a ``.part`` left by a kill);
- orphans: worker processes alive ``--orphan-wait`` seconds after their launcher was killed (then
  killed here), and any left at the end.

``GENACCEL_MAX_ATTEMPTS`` is raised to kills + 2, so that a job killed twice is run again rather
than failed as ``worker_lost`` (the designed limit, not what is measured here). Needs Redis
(``--redis``, default redis://127.0.0.1:6379/15); uses a private queue and key prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil  # noqa: E402
import redis  # noqa: E402

from genaccel.artifacts import artifact_locations  # noqa: E402
from genaccel.settings import Settings  # noqa: E402
from genaccel.spec import Job, JobRequest  # noqa: E402
from genaccel.store.redis import RedisStore  # noqa: E402


class Rig:
    """A private queue, prefix and home; one launcher at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = uuid.uuid4().hex[:8]
        self.queue = f"kill-{self.tag}"
        self.prefix = f"kill-{self.tag}"
        self.home = Path(tempfile.mkdtemp(prefix="genaccel-kill-"))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GENACCEL_")},
            "GENACCEL_HOME": str(self.home), "GENACCEL_REDIS_URL": args.redis, "GENACCEL_REDIS_PREFIX": self.prefix,
            "GENACCEL_HEARTBEAT_S": "2", "GENACCEL_ROUTES": json.dumps({args.model: self.queue}),
            "GENACCEL_MAX_ATTEMPTS": str(args.kills + 2), "GENACCEL_PREVIEWS": "false",
            "GENACCEL_ORPHAN_GRACE_S": str(args.grace), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
        }
        self.s3: subprocess.Popen[bytes] | None = None
        self.bucket = f"kill-{self.tag}"
        store_url = endpoint = None
        if args.s3:  # artifacts in an S3-compatible server (moto's standalone server, its own process)
            port = _free_port()
            self.s3 = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            endpoint, store_url = f"http://127.0.0.1:{port}", f"s3://{self.bucket}/artifacts"
            creds = {"AWS_ACCESS_KEY_ID": "kill", "AWS_SECRET_ACCESS_KEY": "kill", "AWS_DEFAULT_REGION": "us-east-1"}
            os.environ.update(creds)
            self.env.update(creds, GENACCEL_ARTIFACT_STORE=store_url, GENACCEL_S3_ENDPOINT_URL=endpoint)
            _wait_http(endpoint)
        self.settings = Settings(home=self.home, redis_url=args.redis, redis_prefix=self.prefix, heartbeat_s=2,
                                 routes={args.model: self.queue}, artifact_store=store_url, s3_endpoint_url=endpoint)
        if args.s3:
            from genaccel.artifacts.storage import S3Artifacts

            self.objects = S3Artifacts(store_url or "", endpoint)
            self.objects.client.create_bucket(Bucket=self.bucket)
        self.store = RedisStore(args.redis, prefix=self.prefix, heartbeat_ttl_s=2)
        self.redis = redis.Redis.from_url(args.redis, decode_responses=True)
        self.launcher: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.refused = 0

    def submit(self, n: int) -> list[str]:
        """``n`` jobs, every parameter given (what ``prepare_request`` would store for them, without
        importing the pipelines here: that import costs this process as much as a worker's start)."""
        from workers.dispatch import CeleryDispatcher

        dispatcher = CeleryDispatcher(self.settings, self.store)
        ids = []
        for i in range(n):
            request = JobRequest.from_flat({"prompt": f"kill test {i}", "model": self.args.model, "profile": "off",
                                            "steps": self.args.steps, "seed": i, "width": 64, "height": 64,
                                            "guidance": 7.5})
            ids.append(self.store.create(request).id)
            dispatcher.submit(ids[-1])
        dispatcher.stop()
        return ids

    def start(self, old: list[int] | None = None) -> tuple[list[int], float | None]:
        """A new launcher, started again while it is refused (exit 2); returns its children's pids once
        they heartbeat, and how many seconds the ``old`` workers kept running (``None``: they were
        still running after ``--orphan-wait`` seconds, and were killed here as orphans)."""
        t0 = time.time()
        deadline = t0 + 180
        old = list(old or [])
        gone_after: float | None = 0.0

        def watch() -> None:
            nonlocal gone_after
            if not old:
                return
            if not any(_running(pid) for pid in old):
                gone_after = time.time() - t0
                old.clear()
            elif time.time() - t0 > self.args.orphan_wait:
                gone_after = None
                for pid in old:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                old.clear()

        while time.time() < deadline:
            self.starts += 1
            log = open(self.home / f"worker-{self.starts}.log", "wb")  # noqa: SIM115 (the child keeps it)
            cmd = [sys.executable, "-m", "genaccel.cli", "worker", "--device", "cpu", "--queues", self.queue,
                   "--loglevel", "WARNING"]
            self.launcher = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=log,
                                             start_new_session=True)
            log.close()
            while time.time() < deadline:
                watch()
                code = self.launcher.poll()
                if code is not None:
                    if code != 2:
                        raise RuntimeError(f"launcher exited {code}; see {self.home}/worker-{self.starts}.log")
                    self.refused += 1
                    time.sleep(self.args.restart_delay)
                    break
                kids = self.children()
                if not old and kids and all(self.redis.exists(self.worker_key(pid)) for pid in kids):
                    return kids, gone_after
                time.sleep(0.05)
        raise RuntimeError("no worker started")

    def children(self) -> list[int]:
        assert self.launcher is not None
        try:
            return [c.pid for c in psutil.Process(self.launcher.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def worker_key(self, pid: int) -> str:
        return f"{self.prefix}:worker:{socket.gethostname()}:{pid}:celery"

    def wait_step(self, pids: list[int], ids: list[str], timeout: float = 180) -> Job | None:
        """A job that one of ``pids`` runs, past its first step and before its last (the model is
        loaded, the job is mid-way); ``None`` once every job is done."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = [self.store.get(i) for i in ids]
            if all(j.done for j in jobs):
                return None
            for job in jobs:
                if job.state == "running" and 1 <= job.progress.step < job.progress.total and job.worker \
                        and int(job.worker.split(":")[1]) in pids:
                    return job
            time.sleep(0.02)
        raise RuntimeError(f"no job progressed on workers {pids} in {timeout} s")

    def stray_processes(self) -> list[int]:
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmdline = p.info.get("cmdline") or []
            if "workers.main" in cmdline and self.queue in cmdline:
                found.append(p.pid)
        return found

    def close(self) -> None:
        for key in [*self.redis.scan_iter(f"{self.prefix}:*"), *self.redis.scan_iter(f"*{self.queue}*")]:
            self.redis.delete(key)
        self.store.close()
        if self.s3 is not None:
            self.s3.terminate()
            self.s3.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: list[int], timeout: float) -> float | None:
    """Seconds until every pid has exited, or ``None`` if some still run after ``timeout``."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        alive = [p for p in pids if _running(p)]
        if not alive:
            return time.time() - t0
        time.sleep(0.05)
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    rig = Rig(args)
    t_start = time.time()
    kills: list[dict[str, Any]] = []
    orphans, orphan_exit_s = 0, []
    try:
        ids = rig.submit(args.jobs)
        kids, _ = rig.start()
        while len(kills) < args.kills:
            if rig.wait_step(kids, ids) is None:
                break  # the queue ran dry first: fewer kills than asked
            time.sleep(rng.uniform(0.0, args.interval))  # some jobs finish between kills
            job = rig.wait_step(kids, ids)
            if job is None:
                break
            mode = args.mode if args.mode != "alternate" else ("launcher" if len(kills) % 2 == 0 else "tree")
            assert rig.launcher is not None
            at = rig.store.get(job.id)
            if mode == "launcher":
                os.kill(rig.launcher.pid, signal.SIGKILL)
            else:
                os.killpg(rig.launcher.pid, signal.SIGKILL)
            rig.launcher.wait()
            kids, took = rig.start(kids)  # at once, as a supervisor would: refused while the old child runs
            if took is None:
                orphans += 1
            elif mode == "launcher":
                orphan_exit_s.append(took)
            kills.append({"mode": mode, "job_state": at.state, "step": at.progress.step, "of": at.progress.total,
                          "child_gone_s": None if took is None else round(took, 2)})
            print(f"kill {len(kills)}: {mode}, job {job.id[:8]} {at.state} at step {at.progress.step}/"
                  f"{at.progress.total}, old child gone after {took if took is None else round(took, 2)} s; "
                  f"{rig.refused} restarts refused so far", file=sys.stderr, flush=True)
        deadline = time.time() + args.timeout
        while time.time() < deadline and not all(rig.store.get(i).done for i in ids):
            time.sleep(0.2)
        assert rig.launcher is not None
        rig.launcher.send_signal(signal.SIGTERM)
        rig.launcher.wait(60)
        wait_gone(kids, 30)
        left = rig.stray_processes()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        jobs = [rig.store.get(i) for i in ids]
        logs = "".join(p.read_text(errors="replace") for p in sorted(rig.home.glob("worker-*.log")))
        if args.s3:  # every object in the bucket, by job id (keys PREFIX/JOB_ID/NAME)
            keys = [k for page in rig.objects.client.get_paginator("list_objects_v2").paginate(Bucket=rig.bucket)
                    for k in (o["Key"] for o in page.get("Contents", []))]
            files = {f"s3://{rig.bucket}/{k}" for k in keys}
            staged = [p.name for p in (rig.home / "staging").rglob("*") if p.is_file()]
        else:
            outputs = rig.settings.outputs
            files = {str(p.resolve()) for p in outputs.rglob("*") if p.is_file()} if outputs.exists() else set()
            staged = []
        recorded = {loc for j in jobs for a in j.artifacts for loc in artifact_locations(a)}
        # one set = the outputs of one run of the job; sidecars (.json) and posters belong to their output
        per_job = {j.id: sum(1 for f in files if f.rsplit("/", 1)[-1].startswith(j.id[:12])
                             and not f.endswith((".json", ".poster.png"))) for j in jobs}
        reasons = [r for j in jobs for r in j.metadata.get("requeued", [])]
        attempts: dict[str, int] = {}
        for j in jobs:
            attempts[str(j.attempts)] = attempts.get(str(j.attempts), 0) + 1
        return {
            "jobs": args.jobs, "model": args.model, "steps": args.steps,
            "kills": len(kills), "kills_launcher_only": sum(k["mode"] == "launcher" for k in kills),
            "kills_launcher_and_child": sum(k["mode"] == "tree" for k in kills),
            "kills_mid_step": sum(k["job_state"] == "running" and k["step"] > 0 for k in kills),
            "succeeded": sum(j.state == "succeeded" for j in jobs),
            "lost": sum(j.state != "succeeded" for j in jobs),
            "ran_twice": sum(f"job {j.id} is already succeeded" in logs
                             or f"job {j.id}: outcome of this run dropped" in logs for j in jobs),
            "duplicate_artifact_sets": sum(n > j.request.params.num_outputs for j, n in zip(jobs, per_job.values(),
                                                                                           strict=True)),
            "missing_artifacts": sum(a.path not in files for j in jobs for a in j.artifacts),
            "stray_files": sorted(f.rsplit("/", 1)[-1] for f in files - recorded) + staged,
            "artifact_store": "s3 (moto server)" if args.s3 else "local folder",
            "orphans": orphans + len(left),
            "orphan_exit_s": {"median": round(statistics.median(orphan_exit_s), 2),
                              "max": round(max(orphan_exit_s), 2)} if orphan_exit_s else None,
            "restarts_refused": rig.refused, "launcher_starts": rig.starts,
            "attempts": dict(sorted(attempts.items())),
            "requeued_by_orphan": sum(r.startswith("its launcher") for r in reasons),
            "requeued_by_sweep": sum(" died during " in r for r in reasons),
            "wall_s": round(time.time() - t_start, 1),
            "kill_log": kills,
        }
    finally:
        if rig.launcher is not None and rig.launcher.poll() is None:
            os.killpg(rig.launcher.pid, signal.SIGKILL)
        for pid in rig.stray_processes():
            os.kill(pid, signal.SIGKILL)
        rig.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--mode", choices=["alternate", "launcher", "tree"], default="alternate",
                   help="what each kill hits: the launcher alone, launcher and child, or by turns")
    p.add_argument("--interval", type=float, default=2.0, help="a kill comes 0..INTERVAL s after a job's first step")
    p.add_argument("--model", default="tiny-sd")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per job")
    p.add_argument("--grace", type=float, default=10.0, help="GENACCEL_ORPHAN_GRACE_S of the workers")
    p.add_argument("--orphan-wait", type=float, default=15.0, help="a child alive this long after its "
                   "launcher's kill counts as an orphan")
    p.add_argument("--restart-delay", type=float, default=0.5, help="pause before starting a refused launcher "
                   "again (a supervisor's restart delay; on 2 cores a tight loop slows the old child's exit)")
    p.add_argument("--timeout", type=float, default=600.0, help="for the queue to finish after the last kill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    p.add_argument("--s3", action="store_true", help="artifacts in an S3-compatible server (moto, started here)")
    args = p.parse_args()
    summary = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
               **run(args)}
    text = json.dumps(summary, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
