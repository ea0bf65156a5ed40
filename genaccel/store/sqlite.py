"""SQLite job store for the embedded shape: one file, WAL mode, survives restarts.

Each job is one row: indexed columns for the queue order and filters, plus the whole ``Job`` as
JSON. Writes run in ``BEGIN IMMEDIATE`` transactions so several threads and processes (a worker,
``genaccel jobs cancel`` in another shell) can share the file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from genaccel.errors import InvalidRequest, JobNotFound, JobStateConflict
from genaccel.spec import Artifact, Job, JobError, JobRequest, JobState, Modality, Progress
from genaccel.store.base import LATENCY_WINDOW, JobPage, Recovery, StoreStats, owner_is_dead, recent_stats
from genaccel.store.transitions import cancelled, finished, requeued

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    modality TEXT NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT,
    finished_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, seq ASC);
CREATE INDEX IF NOT EXISTS jobs_modality ON jobs (modality, seq);
CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, job_id TEXT NOT NULL);
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""
# Columns added after the first release; databases made before get them on open.
LATER_COLUMNS = {"owner": "TEXT", "finished_at": "REAL"}


class SQLiteStore:
    """``Store`` backed by one SQLite file (use ``:memory:`` only within one thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        conn.executescript(SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        for column, kind in LATER_COLUMNS.items():
            if column not in have:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        conn.executescript(INDEXES)

    # -- connections -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _write(self) -> _Tx:
        return _Tx(self._conn())

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _load(row: tuple[str] | None, job_id: str) -> Job:
        if row is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(row[0])

    @staticmethod
    def _save(db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET state=?, priority=?, finished_at=?, data=? WHERE id=?",
            (job.state, job.priority, job.finished_at, job.model_dump_json(), job.id),
        )

    def _mutate(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        with self._write() as db:
            job = self._load(db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone(), job_id)
            job = change(job)
            self._save(db, job)
            return job

    # -- Store protocol --------------------------------------------------------------------
    def create(self, request: JobRequest, *, job_id: str | None = None, output_dir: str | None = None,
               owner: str | None = None) -> Job:
        job = Job(request=request, priority=request.priority, output_dir=output_dir, owner=owner)
        if job_id:
            job = job.model_copy(update={"id": job_id})
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO jobs (id, state, priority, modality, created_at, owner, data) VALUES (?,?,?,?,?,?,?)",
                    (job.id, job.state, job.priority, request.modality, job.created_at, owner, job.model_dump_json()),
                )
        except sqlite3.IntegrityError:
            raise JobStateConflict(f"job {job.id} already exists; fix: choose another id") from None
        return job

    def get(self, job_id: str) -> Job:
        return self._load(self._conn().execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone(), job_id)

    def list_jobs(
        self, *, state: JobState | None = None, modality: Modality | None = None,
        limit: int = 50, cursor: str | None = None, owner: str | None = None,
    ) -> JobPage:
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if state:
            where.append("state=?")
            args.append(state)
        if modality:
            where.append("modality=?")
            args.append(modality)
        if cursor:
            if not cursor.isdigit():
                raise InvalidRequest("cursor", cursor, "is not a cursor this server gave out",
                                     "pass the next_cursor of the previous page, or none")
            where.append("seq<?")
            args.append(int(cursor))
        sql = "SELECT seq, data FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        rows = self._conn().execute(sql, (*args, limit + 1)).fetchall()
        jobs = [Job.model_validate_json(data) for _, data in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def queue_position(self, job_id: str) -> int | None:
        conn = self._conn()
        row = conn.execute("SELECT seq, state, priority FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        seq, state, priority = row
        if state != "queued":
            return None
        (ahead,) = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE state='queued' AND (priority>? OR (priority=? AND seq<?))",
            (priority, priority, seq),
        ).fetchone()
        return int(ahead)

    def count(self, *, state: JobState | None = None, owner: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM jobs WHERE 1=1"
        args: list[str] = []
        if state is not None:
            sql += " AND state=?"
            args.append(state)
        if owner is not None:
            sql += " AND owner=?"
            args.append(owner)
        return int(self._conn().execute(sql, args).fetchone()[0])

    def stats(self) -> StoreStats:
        conn = self._conn()
        counts = dict.fromkeys(("queued", "running", "succeeded", "failed", "cancelled"), 0)
        counts.update({state: n for state, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")})
        rows = conn.execute("SELECT data FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
                            (LATENCY_WINDOW,))
        return recent_stats(counts, (Job.model_validate_json(data) for (data,) in rows))

    def claim_next(self, worker: str, only: Iterable[str] | None = None) -> Job | None:
        sql = "SELECT data FROM jobs WHERE state='queued'"
        args: list[Any] = []
        if only is not None:
            ids = list(only)
            if not ids:
                return None
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        sql += " ORDER BY priority DESC, seq ASC LIMIT 1"
        with self._write() as db:
            row = db.execute(sql, args).fetchone()
            if row is None:
                return None
            job = Job.model_validate_json(row[0])
            job = job.model_copy(update={
                "state": "running", "worker": worker, "attempts": job.attempts + 1,
                "started_at": time.time(), "progress": Progress(),
            })
            self._save(db, job)
            return job

    def set_progress(self, job_id: str, step: int, total: int) -> bool:
        job = self._mutate(job_id, lambda j: j.model_copy(update={"progress": Progress(step=step, total=total)}))
        return job.cancel_requested

    def remember_result(self, key: str, job_id: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO results (key, job_id) VALUES (?, ?)", (key, job_id))

    def lookup_result(self, key: str) -> str | None:
        row = self._conn().execute("SELECT job_id FROM results WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def update_metadata(self, job_id: str, metadata: dict[str, Any]) -> None:
        self._mutate(job_id, lambda j: j.model_copy(update={"metadata": {**j.metadata, **metadata}}))

    def finish(
        self, job_id: str, state: JobState, *, artifacts: list[Artifact] | None = None,
        error: JobError | None = None, timings: dict[str, float] | None = None, worker: str | None = None,
    ) -> Job:
        return self._mutate(job_id, lambda job: finished(job, state, artifacts, error, timings, worker))

    def cancel(self, job_id: str) -> Job:
        return self._mutate(job_id, cancelled)

    def requeue(self, job_id: str, reason: str, worker: str | None = None) -> Job:
        return self._mutate(job_id, lambda job: requeued(job, reason, worker))

    def recover(self, max_attempts: int) -> list[Recovery]:
        done: list[Recovery] = []
        with self._write() as db:
            rows = db.execute("SELECT data FROM jobs WHERE state='running'").fetchall()
            for (data,) in rows:
                job = Job.model_validate_json(data)
                if not owner_is_dead(job.worker):
                    continue
                if job.cancel_requested:
                    job = job.model_copy(update={"state": "cancelled", "finished_at": time.time()})
                    done.append(Recovery(job.id, "cancelled", "its worker died after a cancel request"))
                elif job.attempts < max_attempts:
                    reason = f"worker {job.worker} died during attempt {job.attempts} of {max_attempts}"
                    notes = [*job.metadata.get("requeued", []), reason]
                    job = job.model_copy(update={"state": "queued", "worker": None, "progress": Progress(),
                                                 "metadata": {**job.metadata, "requeued": notes}})
                    done.append(Recovery(job.id, "requeued", reason))
                else:
                    reason = (f"its worker died on each of {job.attempts} attempts (max_attempts={max_attempts}); "
                              "not retried again; fix: check the worker log (out of memory?) and resubmit")
                    job = job.model_copy(update={
                        "state": "failed", "finished_at": time.time(),
                        "error": JobError(code="worker_lost", message=reason),
                    })
                    done.append(Recovery(job.id, "failed", reason))
                self._save(db, job)
        return done


class _Tx:
    """``with`` block running one ``BEGIN IMMEDIATE`` transaction (rolled back on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
