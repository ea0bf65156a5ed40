"""Batch rendering from a JSONL or CSV file, with a manifest that makes runs resumable.

Each line is a flat request (the keys are the CLI option names: ``prompt``, ``model``, ``steps``,
``seed``, ``guidance``, ``negative``, ...). Bad lines are reported by line number and skipped;
``manifest.jsonl`` in the output folder holds one record per line (job id, state, artifacts,
timings, error) and is rewritten atomically after every change, so a killed run loses nothing and
``--resume`` renders only what is not done.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from genaccel.errors import BadInputFile, GenAccelError, JobNotFound
from genaccel.spec import Job, JobRequest

MANIFEST = "manifest.jsonl"


@dataclass
class BatchLine:
    line: int
    data: dict[str, Any] | None
    error: str | None = None


def read_batch_file(path: Path) -> Iterator[BatchLine]:
    """Yield each request line with its 1-based line number; unparsable lines carry an error."""
    if not path.is_file():
        raise BadInputFile(f"batch file {str(path)!r} does not exist; fix: pass a .jsonl or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for number, text in enumerate(fh, 1):
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield BatchLine(number, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
                    continue
                if not isinstance(data, dict):
                    yield BatchLine(number, None, f"expected a JSON object, got {type(data).__name__}")
                else:
                    yield BatchLine(number, data)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if None in row:
                    yield BatchLine(reader.line_num, None, "more cells than header columns")
                    continue
                if not any((v or "").strip() for v in row.values()):
                    continue
                yield BatchLine(reader.line_num, {k.strip(): v for k, v in row.items() if k})
    else:
        raise BadInputFile(f"batch file {str(path)!r} has suffix {suffix!r}; the limit is .jsonl or .csv; "
                           "fix: rename or convert it")


def request_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Manifest:
    """One record per batch line, kept on disk in ``out/manifest.jsonl``."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST
        self.records: dict[int, dict[str, Any]] = {}
        if self.path.is_file():
            for text in self.path.read_text(encoding="utf-8").splitlines():
                if text.strip():
                    rec = json.loads(text)
                    self.records[int(rec["line"])] = rec

    def put(self, record: dict[str, Any]) -> None:
        self.records[int(record["line"])] = record
        tmp = self.path.with_name(MANIFEST + ".part")
        with tmp.open("w", encoding="utf-8") as fh:
            for line in sorted(self.records):
                fh.write(json.dumps(self.records[line], sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def job_record(line: int, digest: str, job: Job) -> dict[str, Any]:
    return {
        "line": line, "request_hash": digest, "job_id": job.id, "state": job.state,
        "artifacts": [a.path for a in job.artifacts], "seed": job.request.params.seed,
        "timings": job.timings, "error": job.error.message if job.error else None,
    }


class BatchEngine(Protocol):
    def prepare(self, request: JobRequest) -> JobRequest: ...
    def submit(self, request: JobRequest, *, output_dir: Path | None = None, prepared: bool = False) -> Job: ...
    def adopt(self, job_id: str) -> None: ...
    def get(self, job_id: str) -> Job: ...
    def wait(self, job_ids: list[str], on_update: Callable[[Job], None] | None = None) -> list[Job]: ...


@dataclass
class BatchResult:
    total: int
    succeeded: int
    skipped: int
    failed: list[tuple[int, str]]

    @property
    def ok(self) -> bool:
        return not self.failed


def run_batch(
    engine: BatchEngine, path: Path, out_dir: Path, defaults: dict[str, Any], *, resume: bool,
    report: Callable[[str], None], on_start: Callable[[int], None] | None = None,
    on_update: Callable[[Job], None] | None = None,
) -> BatchResult:
    """Render every good line of ``path`` into ``out_dir``; see the module docstring."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir)
    if manifest.records and not resume:
        raise BadInputFile(f"{manifest.path} already exists; fix: pass --resume to continue that batch, "
                           "or choose another --out folder")
    lines = list(read_batch_file(path))
    failed: list[tuple[int, str]] = []
    skipped = 0
    waiting: dict[str, tuple[int, str]] = {}
    for item in lines:
        if item.data is None:
            failed.append((item.line, item.error or "unreadable"))
            manifest.put({"line": item.line, "state": "invalid", "error": item.error, "job_id": None})
            continue
        digest = request_hash({**defaults, **item.data})
        previous = manifest.records.get(item.line)
        if resume and previous and previous.get("request_hash") == digest and previous.get("job_id"):
            job = _lookup(engine, previous["job_id"])
            if job is not None and job.state == "succeeded" and all(Path(a.path).is_file() for a in job.artifacts):
                manifest.put(job_record(item.line, digest, job))
                skipped += 1
                continue
            if job is not None and job.state in ("queued", "running"):
                engine.adopt(job.id)
                waiting[job.id] = (item.line, digest)
                continue
        try:
            request = engine.prepare(JobRequest.from_flat(item.data, defaults))
        except GenAccelError as exc:
            failed.append((item.line, exc.message))
            manifest.put({"line": item.line, "state": "invalid", "error": exc.message, "job_id": None,
                          "request_hash": digest})
            continue
        job = engine.submit(request, output_dir=out_dir, prepared=True)
        manifest.put(job_record(item.line, digest, job))
        waiting[job.id] = (item.line, digest)
    for line, message in failed:
        report(f"line {line}: skipped: {message}")
    if on_start:
        on_start(len(waiting))
    counts = {"succeeded": 0}

    def update(job: Job) -> None:
        line, digest = waiting[job.id]
        if job.done:
            manifest.put(job_record(line, digest, job))
            if job.state == "succeeded":
                counts["succeeded"] += 1
                report(f"line {line}: succeeded: {', '.join(a.path for a in job.artifacts)}")
            else:
                message = job.error.message if job.error else job.state
                failed.append((line, message))
                report(f"line {line}: {job.state}: {message}")
        if on_update:
            on_update(job)

    engine.wait(list(waiting), on_update=update)
    return BatchResult(total=len(lines), succeeded=counts["succeeded"], skipped=skipped, failed=sorted(failed))


def _lookup(engine: BatchEngine, job_id: str) -> Job | None:
    try:
        return engine.get(job_id)
    except JobNotFound:
        return None
