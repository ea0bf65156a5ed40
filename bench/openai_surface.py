#!/usr/bin/env python
"""What the OpenAI-compatible surface costs and what streaming speech buys, on the embedded shape
served by uvicorn on a local port:

* a ``noop`` image through the official ``openai`` client (``images.generate``, synchronous) and
  through the native API (``POST /v1/jobs``, poll ``GET /v1/jobs/{id}``, download), p50 / p95;
* speech of five sentences of the speech corpus (20 words) with a real speech model (default
  ``tiny-speech-ref``, the flow-matching mel DiT, ``--speech-steps`` steps a sentence): time to
  the first audio byte streamed (``stream_format: "audio"``: one job that records each sentence
  as it is made) and not streamed, and the time to the whole answer.

    python bench/openai_surface.py --calls 30 --json bench/results/openai-surface.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from genaccel.api import create_app  # noqa: E402
from genaccel.serve import build_backend  # noqa: E402
from genaccel.settings import Settings  # noqa: E402
from tests.test_openai_client import ThreadServer  # noqa: E402

TEXT = "red cat jumps seven. blue dog sits two. green fish eats one. red cat jumps seven. blue dog sits two."


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def native_image(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"prompt": "a cat", "model": "noop", "cache": False}).json()
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.005)
        job = http.get(f"/v1/jobs/{job['id']}").json()
    http.get(job["artifacts"][0]["url"]).raise_for_status()


def speech(http: httpx.Client, stream: bool, model: str, steps: int | None) -> tuple[float, float]:
    body: dict[str, Any] = {"model": model, "input": TEXT, "response_format": "pcm", "cache": False}
    if steps is not None:
        body["steps"] = steps
    if stream:
        body["stream_format"] = "audio"
    t0 = time.perf_counter()
    first = None
    with http.stream("POST", "/openai/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        for piece in r.iter_bytes():
            if piece and first is None:
                first = time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--speech-model", default="tiny-speech-ref")
    parser.add_argument("--speech-steps", type=int, default=32, help="per sentence (0: the model has none)")
    args = parser.parse_args()
    import openai

    home = Path(tempfile.mkdtemp(prefix="genaccel-openai-bench-"))
    backend, stop = build_backend(Settings(home=home, default_model="noop", rate_limit_per_min=0))
    steps = args.speech_steps or None
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "calls": args.calls,
                               "speech": {"model": args.speech_model, "steps": steps, "text": TEXT}}
    try:
        with ThreadServer(create_app(backend)) as url:
            http = httpx.Client(base_url=url, timeout=60)
            client = openai.OpenAI(base_url=url + "/openai/v1", api_key="unused", http_client=None)
            for name, call in (("openai_images_generate", lambda: client.images.generate(
                    model="noop", prompt="a cat", extra_body={"cache": False})), ("native_submit_poll_download",
                                                                                lambda: native_image(http))):
                call()  # warm
                times = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                results[name] = {"p50_s": round(statistics.median(times), 4), "p95_s": round(pct(times, 0.95), 4)}
            speech(http, False, args.speech_model, steps)  # warm
            for name, stream in (("speech_whole", False), ("speech_streamed", True)):
                runs = [speech(http, stream, args.speech_model, steps) for _ in range(3)]
                results[name] = {"first_byte_s": round(statistics.median(r[0] for r in runs), 3),
                                 "total_s": round(statistics.median(r[1] for r in runs), 3)}
    finally:
        stop(5)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
