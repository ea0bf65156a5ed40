"""Job webhooks: a POST to the client's URL when its job starts and when it finishes.

Each delivery is signed so the receiver can check it came from this server and is fresh:
``X-Genaccel-Signature: sha256=HEX`` where HEX is the HMAC-SHA256, keyed with
``GENACCEL_WEBHOOK_SECRET``, of ``"{X-Genaccel-Timestamp}.{body}"``. Failed deliveries (network
error or a non-2xx answer) are retried with exponential back-off in a background thread, so a
slow receiver never holds up a job. URLs that point into private networks are refused unless
``GENACCEL_WEBHOOK_ALLOW_PRIVATE`` is set, so a client cannot make the server probe its own LAN.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from genaccel.artifacts import api_path
from genaccel.errors import InvalidRequest
from genaccel.events import JobEvent
from genaccel.settings import Settings

log = logging.getLogger(__name__)
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: float = 300.0) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    fresh = abs(time.time() - float(timestamp)) <= max_age_s
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _private(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            return True
    return False


def check_url(url: str, allow_private: bool) -> str:
    """Refuse anything but an http(s) URL to a public host (``InvalidRequest``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook", url, "must be an http:// or https:// URL", "pass e.g. https://example.com/hook")
    if not allow_private and _private(parts.hostname):
        raise InvalidRequest("webhook", url, "points into a private network",
                             "use a public URL, or set GENACCEL_WEBHOOK_ALLOW_PRIVATE=true on the server")
    return url


def deliver(url: str, event: str, payload: dict[str, Any], secret: str, *, allow_private: bool = False,
            backoff: tuple[float, ...] = BACKOFF_S) -> bool:
    """POST one event, retrying with back-off; returns whether the receiver accepted it."""
    import httpx

    body = json.dumps({"event": event, **payload}, separators=(",", ":")).encode()
    for attempt, pause in enumerate((0.0, *backoff)):
        time.sleep(pause)
        try:
            check_url(url, allow_private)
            stamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Genaccel-Event": event,
                       "X-Genaccel-Timestamp": stamp, "X-Genaccel-Signature": sign(secret, stamp, body)}
            answer = httpx.post(url, content=body, headers=headers, timeout=10.0, follow_redirects=False)
            if 200 <= answer.status_code < 300:
                return True
            log.warning("webhook %s for %s: HTTP %d (attempt %d)", event, url, answer.status_code, attempt + 1)
        except (httpx.HTTPError, InvalidRequest) as exc:
            log.warning("webhook %s for %s failed (attempt %d): %s", event, url, attempt + 1, exc)
    return False


def send_async(url: str, event: str, payload: dict[str, Any], secret: str, allow_private: bool) -> threading.Thread:
    t = threading.Thread(target=deliver, args=(url, event, payload, secret), kwargs={"allow_private": allow_private},
                         name="genaccel-webhook", daemon=True)
    t.start()
    return t


class WebhookListener:
    """The lifecycle listener that posts ``started`` and ``finished`` to a job's webhook (the URL
    its request gave, kept in its metadata)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, event: JobEvent) -> None:
        job = event.job
        if event.name == "progress" or job is None:
            return
        url = job.metadata.get("webhook")
        if not url:
            return
        payload = {"id": job.id, "state": job.state, "attempt": job.attempts,
                   "error": job.error.model_dump(exclude={"traceback"}) if job.error else None,
                   "artifacts": [api_path(job.id, a.name) for a in job.artifacts]}
        send_async(str(url), event.name, payload, self.settings.webhook_secret, self.settings.webhook_allow_private)
