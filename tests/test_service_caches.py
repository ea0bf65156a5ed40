"""Service caches: the prompt-embedding cache (a repeated prompt does not run the text encoder)
and the result cache (an identical deterministic request is answered with the earlier job's
files at once), with their hit counts in /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from genaccel.api import Backend, create_app
from genaccel.service import JobService
from genaccel.settings import Settings
from genaccel.spec import Job, JobRequest
from pipelines.encoder_cache import attach_prompt_cache
from pipelines.engine import LocalEngine
from pipelines.registry import ModelRegistry


@pytest.fixture
def engine(isolated_home: Path) -> Iterator[LocalEngine]:
    e = LocalEngine(Settings(home=isolated_home, default_model="tiny-sd", rate_limit_per_min=0), scoped=False)
    e.dispatcher.start()
    yield e
    e.dispatcher.stop(timeout=10)


def service(engine: LocalEngine) -> JobService:
    return JobService(Backend(engine.settings, engine.store, engine.dispatcher, engine.registry))


def run(engine: LocalEngine, flat: dict[str, object]) -> Job:
    job = service(engine).enqueue(JobRequest.from_flat(flat), None)
    return engine.wait([job.id])[0]


def pixels(job: Job) -> list[np.ndarray]:
    return [np.asarray(Image.open(a.path)) for a in job.artifacts]


def test_a_repeated_prompt_with_a_new_seed_skips_the_text_encoder(engine: LocalEngine, tmp_path: Path,
                                                                  isolated_home: Path) -> None:
    first = run(engine, {"prompt": "a red cat", "steps": 2, "seed": 1})
    second = run(engine, {"prompt": "a red cat", "steps": 2, "seed": 2})
    assert first.metadata["prompt_cache"] == {"hits": 0, "misses": 2}  # the prompt and the empty negative
    assert second.metadata["prompt_cache"] == {"hits": 2, "misses": 0}  # the text encoder did not run
    other = LocalEngine(Settings(home=tmp_path / "nocache", default_model="tiny-sd", prompt_cache_size=0),
                        scoped=False)
    other.dispatcher.start()
    try:
        plain = run(other, {"prompt": "a red cat", "steps": 2, "seed": 2})
    finally:
        other.dispatcher.stop(timeout=10)
    assert "prompt_cache" not in plain.metadata
    for a, b in zip(pixels(second), pixels(plain), strict=True):
        assert np.array_equal(a, b)  # cached embeddings are the encoder's own bits


def test_prompt_cache_hook_is_exact_and_bounded(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    from pipelines.tiny import build_tiny_sd

    pipe = build_tiny_sd()
    counts = attach_prompt_cache(pipe, size=2)
    assert counts is not None
    ids = pipe.tokenizer(["a cat", "a dog", "a cow"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        fresh = [tiny_sd.text_encoder(row[None])[0] for row in ids]
        got = [pipe.text_encoder(row[None])[0] for row in ids]
        again = pipe.text_encoder(ids[2][None])[0]
        evicted = pipe.text_encoder(ids[0][None])[0]  # the oldest entry went when the third came in
    assert all(torch.equal(a, b) for a, b in zip(fresh, got, strict=True))
    assert torch.equal(again, fresh[2]) and torch.equal(evicted, fresh[0])
    assert (counts.hits, counts.misses) == (1, 4)
    again.add_(1)  # a caller that changes what it got does not change the cache
    with torch.no_grad():
        assert torch.equal(pipe.text_encoder(ids[2][None])[0], fresh[2])


def test_an_identical_request_is_answered_from_the_earlier_job(engine: LocalEngine, tmp_path: Path) -> None:
    flat = {"prompt": "a blue dog", "steps": 2, "seed": 5}
    first = run(engine, flat)
    again = service(engine).enqueue(JobRequest.from_flat({**flat, "priority": 9}), None)
    assert again.state == "succeeded" and again.id != first.id  # at once: no worker ran it
    assert again.metadata["result_cache"] == {"from_job": first.id}
    assert [a.path for a in again.artifacts] == [a.path for a in first.artifacts]
    assert "returned without running the pipeline" in again.metadata["warnings"][0]
    fresh = run(engine, {**flat, "cache": False})  # opted out: it runs, with the same pixels
    assert "result_cache" not in fresh.metadata and fresh.metadata["prompt_cache"]["hits"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(pixels(fresh), pixels(first), strict=True))
    other_seed = service(engine).enqueue(JobRequest.from_flat({**flat, "seed": 6}), None)
    assert other_seed.state == "queued"
    engine.wait([other_seed.id])
    copied = service(engine).enqueue(JobRequest.from_flat(flat), None, output_dir=tmp_path / "cli")
    assert Path(copied.artifacts[0].path).parent == (tmp_path / "cli").resolve()  # a CLI run gets its files
    assert np.array_equal(pixels(copied)[0], pixels(first)[0])


def test_result_cache_skips_jobs_whose_files_are_gone_and_metrics_count_hits(engine: LocalEngine) -> None:
    flat = {"prompt": "a green cow", "steps": 2, "seed": 8}
    first = run(engine, flat)
    hit = service(engine).enqueue(JobRequest.from_flat(flat), None)
    assert hit.metadata.get("result_cache")
    for art in first.artifacts:
        Path(art.path).unlink()
    miss = service(engine).enqueue(JobRequest.from_flat(flat), None)
    assert miss.state == "queued"
    engine.wait([miss.id])
    client = TestClient(create_app(Backend(engine.settings, engine.store, engine.dispatcher,
                                           ModelRegistry(engine.settings, allow_paths=False))))
    text = client.get("/metrics").text
    assert 'genaccel_cache_hits{cache="result"} 1' in text and 'genaccel_cache_misses{cache="result"} 2' in text
    assert 'genaccel_cache_hits{cache="prompt"} 2' in text and 'genaccel_cache_hit_ratio{cache="prompt"}' in text
