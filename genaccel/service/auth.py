"""API keys, ownership and per-key rate limits.

Only SHA-256 digests of keys live in settings; a caller is known by the first 16 hex digits of
its key's digest (its *owner id*), which is what jobs record. With no keys configured every
caller is the single owner ``local`` (the server then listens on 127.0.0.1 only).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass

LOCAL_OWNER = "local"


def digest(key: str) -> str:
    """The SHA-256 hex digest stored in ``GENACCEL_API_KEYS`` for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and its digest."""
    key = "ga_" + secrets.token_urlsafe(32)
    return key, digest(key)


class AuthError(Exception):
    """No key, or a key that is not configured (401)."""


class KeyRing:
    """Checks ``Authorization: Bearer KEY`` headers against the configured digests."""

    def __init__(self, digests: list[str]) -> None:
        self._digests = [d.strip().lower() for d in digests if d.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner(self, authorization: str | None) -> str:
        """The caller's owner id; raises ``AuthError`` when keys are on and this one is not valid."""
        if not self.enabled:
            return LOCAL_OWNER
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError("missing API key; fix: send the header 'Authorization: Bearer YOUR_KEY'")
        d = digest(key.strip())
        if not any(hmac.compare_digest(d, known) for known in self._digests):
            raise AuthError("unknown API key; fix: use a key whose SHA-256 digest is in GENACCEL_API_KEYS")
        return d[:16]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per owner: ``per_min`` requests a minute, bursts up to ``per_min``."""

    def __init__(self, per_min: int) -> None:
        self.rate = per_min / 60.0
        self.capacity = float(per_min)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, owner: str) -> float:
        """Spend one token; returns 0 when allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            b = self._buckets.setdefault(owner, _Bucket(self.capacity, now))
            b.tokens = min(self.capacity, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens >= 1:
                b.tokens -= 1
                return 0.0
            return (1 - b.tokens) / self.rate


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
