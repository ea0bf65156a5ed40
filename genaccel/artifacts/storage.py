"""Where artifacts live once written: a local folder (the embedded default: the files stay where
the runner wrote them) or an S3-compatible object store (several machines: workers upload, the
API streams from it). boto3 is the client: it is maintained by AWS and speaks to S3, MinIO,
Ceph, R2 and moto alike.

Keys come from the job id (``PREFIX/JOB_ID/NAME``), so a job re-run after its worker died writes
the same keys and overwrites instead of adding a second set, and every artifact of a job can be
found and removed by its prefix. An upload is one PUT per file, which S3 makes visible atomically;
a job's record names its artifacts only after every upload finished, so an interrupted upload is
never visible through the API (its objects are overwritten by the retry).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from genaccel.settings import Settings

log = logging.getLogger(__name__)
S3_SCHEME = "s3://"


class ArtifactStore(Protocol):
    def put(self, job_id: str, path: Path, media_type: str) -> str:
        """Store the file at ``path`` as one of ``job_id``'s artifacts; returns its location."""
        ...

    def open(self, location: str) -> Iterator[bytes]:
        """The bytes of a stored artifact, in chunks; ``FileNotFoundError`` when it is gone."""
        ...

    def exists(self, location: str) -> bool: ...

    def remove_job(self, job_id: str) -> int:
        """Remove every stored file of ``job_id``; returns how many."""
        ...


class LocalArtifacts:
    """The embedded default: artifacts stay in the folder the runner wrote them to."""

    def put(self, job_id: str, path: Path, media_type: str) -> str:
        return str(path.resolve())

    def open(self, location: str) -> Iterator[bytes]:
        with open(location, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def exists(self, location: str) -> bool:
        return Path(location).is_file()

    def remove_job(self, job_id: str) -> int:
        return 0  # outputs live in folders the user chose; never deleted behind their back


class S3Artifacts:
    """An S3-compatible bucket. ``url`` is ``s3://BUCKET/PREFIX``; the endpoint (MinIO, moto, ...)
    and credentials come from ``GENACCEL_S3_ENDPOINT_URL`` and the standard ``AWS_*`` variables."""

    def __init__(self, url: str, endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"artifact store {url!r} is not an s3://BUCKET[/PREFIX] URL")
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1")

    def key(self, job_id: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, job_id, name) if p)

    def put(self, job_id: str, path: Path, media_type: str) -> str:
        key = self.key(job_id, path.name)
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": media_type})
        return f"{S3_SCHEME}{self.bucket}/{key}"

    def _split(self, location: str) -> tuple[str, str]:
        bucket, _, key = location.removeprefix(S3_SCHEME).partition("/")
        return bucket, key

    def open(self, location: str) -> Iterator[bytes]:
        bucket, key = self._split(location)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(location) from None
        try:
            yield from body.iter_chunks(1 << 20)
        finally:
            body.close()

    def exists(self, location: str) -> bool:
        bucket, key = self._split(location)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except Exception:
            return False
        return True

    def list_job(self, job_id: str) -> list[str]:
        """The keys stored under ``job_id``."""
        prefix = self.key(job_id, "")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def remove_job(self, job_id: str) -> int:
        keys = self.list_job(job_id)
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
        return len(keys)


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store ``settings`` name: ``GENACCEL_ARTIFACT_STORE=s3://bucket/prefix``, else local."""
    if settings.artifact_store:
        return S3Artifacts(settings.artifact_store, settings.s3_endpoint_url, settings.s3_region)
    return LocalArtifacts()
