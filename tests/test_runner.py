"""The embedded job path end to end: submit -> worker thread -> artifacts and store records."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genaccel.artifacts import read_metadata, request_from_artifact
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine
from pipelines.registry import ModelDefaults, ModelInfo


def test_job_succeeds_with_artifacts_and_metadata(settings: Settings, tmp_path: Path) -> None:
    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": "a cat", "steps": 2, "seed": 5, "num_outputs": 2}),
                            output_dir=tmp_path / "out")
        (done,) = engine.wait([job.id])
    assert done.state == "succeeded", done.error
    assert done.progress.step == done.progress.total == 2
    assert {"queued_s", "load_s", "run_s", "save_s"} <= set(done.timings)
    assert [a.seed for a in done.artifacts] == [5, 6]
    meta = read_metadata(Path(done.artifacts[1].path))
    assert meta["seed"] == 6 and meta["model"] == "tiny-sd" and meta["job_id"] == done.id
    assert meta["request"]["params"]["steps"] == 2 and "torch" in meta["versions"]
    text = Image.open(done.artifacts[0].path).text["parameters"]  # type: ignore[attr-defined]
    assert text.startswith("a cat\nSteps: 2, Sampler: DDIMScheduler, CFG scale: 7.5, Seed: 5, Size: 64x64")


def test_rerun_from_artifact_gives_identical_pixels(settings: Settings, tmp_path: Path) -> None:
    with LocalEngine(settings) as engine:
        first = engine.wait([engine.submit(JobRequest.from_flat({"prompt": "a cat", "steps": 2, "num_outputs": 2}),
                                           output_dir=tmp_path).id])[0]
        again_req = request_from_artifact(Path(first.artifacts[1].path))
        again = engine.wait([engine.submit(again_req, output_dir=tmp_path).id])[0]
    assert again_req == first.request
    for old, new in zip(first.artifacts, again.artifacts, strict=True):
        assert old.seed == new.seed and old.path != new.path
        assert np.array_equal(np.asarray(Image.open(old.path)), np.asarray(Image.open(new.path)))


def test_invalid_request_is_refused_before_queueing(settings: Settings) -> None:
    with LocalEngine(settings) as engine:
        with pytest.raises(InvalidRequest, match="steps=0"):
            engine.submit(JobRequest.from_flat({"prompt": "x", "steps": 0}))
        assert engine.store.list_jobs().jobs == []


def wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end
        time.sleep(0.02)


def test_cancel_running_stops_at_next_step_and_queued_never_starts(settings: Settings) -> None:
    with LocalEngine(settings) as engine:
        long = engine.submit(JobRequest.from_flat({"prompt": "long", "steps": 200, "seed": 1}))
        queued = engine.submit(JobRequest.from_flat({"prompt": "never", "steps": 2, "seed": 1}))
        wait_for(lambda: engine.get(long.id).progress.step >= 1)
        engine.store.cancel(queued.id)
        engine.store.cancel(long.id)
        done = {j.id: j for j in engine.wait([long.id, queued.id])}
    assert done[long.id].state == "cancelled"
    assert done[long.id].progress.step < 200 and done[long.id].artifacts == []
    assert done[queued.id].state == "cancelled" and done[queued.id].started_at is None


def test_pipeline_crash_is_recorded_and_worker_keeps_serving(settings: Settings, tmp_path: Path) -> None:
    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("weights exploded")

    with LocalEngine(settings) as engine:
        engine.registry.add(ModelInfo("broken", "image", "sd-unet", "builtin", "broken", "StableDiffusionPipeline",
                                      ModelDefaults(steps=2, width=64, height=64), builder=broken))
        bad = engine.submit(JobRequest.from_flat({"prompt": "x", "model": "broken"}))
        good = engine.submit(JobRequest.from_flat({"prompt": "x", "steps": 1}), output_dir=tmp_path)
        done = {j.id: j for j in engine.wait([bad.id, good.id])}
    err = done[bad.id].error
    assert done[bad.id].state == "failed" and err is not None
    assert err.code == "pipeline_failed" and "RuntimeError: weights exploded" in err.message
    assert err.traceback and "broken" in err.traceback
    assert done[good.id].state == "succeeded"


def test_model_cache_loads_once(settings: Settings, tmp_path: Path) -> None:
    with LocalEngine(settings) as engine:
        ids = [engine.submit(JobRequest.from_flat({"prompt": str(i), "steps": 1}), output_dir=tmp_path).id
               for i in range(3)]
        engine.wait(ids)
        assert engine.runner.cache.loads == 1
