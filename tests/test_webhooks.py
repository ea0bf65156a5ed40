"""Webhooks: signed deliveries on start and finish, retried after a failure, unsafe URLs refused."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.webhooks import check_url, deliver, sign, verify
from tests.test_api import make_client, wait_done

SECRET = "s3cret"


class Receiver:
    """A local HTTP endpoint that answers 500 to the first ``fail_first`` posts, then 204."""

    def __init__(self, fail_first: int = 1) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.calls = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                if outer.calls <= fail_first:
                    self.send_response(500)
                else:
                    outer.got.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for _, body in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_job_webhooks_are_signed_and_retried(isolated_home: Path, receiver: Receiver) -> None:
    settings = Settings(home=isolated_home, default_model="tiny-sd", webhook_secret=SECRET,
                        webhook_allow_private=True)
    client, engine = make_client(settings)
    try:
        job = client.post("/v1/jobs", json={"prompt": "a cat", "steps": 1, "webhook": receiver.url}).json()
        assert wait_done(client, job["id"])["state"] == "succeeded"
        deadline = time.time() + 20
        while len(receiver.got) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        engine.dispatcher.stop(timeout=10)
    assert sorted(receiver.events()) == ["finished", "started"] and receiver.calls == 3  # one retry
    for headers, body in receiver.got:
        assert verify(SECRET, headers["X-Genaccel-Timestamp"], body, headers["X-Genaccel-Signature"])
        assert not verify("other", headers["X-Genaccel-Timestamp"], body, headers["X-Genaccel-Signature"])
    finished = next(json.loads(b) for _, b in receiver.got if json.loads(b)["event"] == "finished")
    assert finished["state"] == "succeeded" and finished["artifacts"][0].startswith(f"/v1/artifacts/{job['id']}/")


def test_webhook_requests_are_checked(isolated_home: Path) -> None:
    no_secret, _ = make_client(Settings(home=isolated_home), run=False)
    r = no_secret.post("/v1/jobs", json={"prompt": "a cat", "webhook": "https://example.com/h"})
    assert r.status_code == 422 and "GENACCEL_WEBHOOK_SECRET" in r.json()["error"]["message"]
    client, _ = make_client(Settings(home=isolated_home, webhook_secret=SECRET), run=False)
    for url, needle in [("ftp://example.com/x", "http:// or https://"), ("http://127.0.0.1:9/x", "private network"),
                        ("http://10.1.2.3/x", "private network")]:
        r = client.post("/v1/jobs", json={"prompt": "a cat", "webhook": url})
        assert r.status_code == 422 and needle in r.json()["error"]["message"], url


def test_deliver_gives_up_after_its_retries() -> None:
    dead = "http://127.0.0.1:9/hook"  # nothing listens on the discard port
    assert deliver(dead, "finished", {"id": "x"}, SECRET, allow_private=True, backoff=(0.01, 0.01)) is False
    with pytest.raises(InvalidRequest, match="private network"):
        check_url(dead, allow_private=False)
    assert sign(SECRET, "1", b"{}") == sign(SECRET, "1", b"{}") != sign(SECRET, "2", b"{}")
