"""Signed, expiring links to job artifacts, for clients that cannot send a key with each fetch.

A browser cannot attach ``Authorization: Bearer KEY`` to an ``<img src>``, ``<video src>`` or a
download link, and OpenAI clients expect an image ``url`` anyone holding it can fetch. So the web
UI and the OpenAI-compatible API hand out links signed with HMAC-SHA256 over (job, file name,
expiry), issued only after the caller's key was checked against the job's owner. A link works
for one file of one job until it expires (like a pre-signed S3 URL).

The signing secret is random per ``FileLinks`` object: links do not survive a restart, and several
API replicas behind one address would each need the same ``FileLinks(secret=...)``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

DEFAULT_TTL_S = 3600.0


class FileLinks:
    """Issues and checks signed artifact URLs under ``prefix`` (e.g. ``/ui/files``)."""

    def __init__(self, prefix: str, secret: bytes | None = None, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.prefix = prefix.rstrip("/")
        self._secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def _sign(self, job_id: str, name: str, expires: int) -> str:
        msg = f"{job_id}\0{name}\0{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def url(self, job_id: str, name: str, *, download: bool = False, now: float | None = None) -> str:
        """A link to one artifact, valid for one to two ``ttl_s``; give it only to the job's owner.

        The expiry is rounded up to a whole window, so a view re-rendered on every poll keeps the
        same URL (the browser neither reloads nor flickers).
        """
        now = time.time() if now is None else now
        expires = int((now // self.ttl_s + 2) * self.ttl_s)
        tail = "&download=1" if download else ""
        return f"{self.prefix}/{job_id}/{name}?exp={expires}&sig={self._sign(job_id, name, expires)}{tail}"

    def check(self, job_id: str, name: str, expires: int, sig: str, now: float | None = None) -> bool:
        """Whether ``sig`` was issued for this file and has not expired."""
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._sign(job_id, name, expires), sig)
