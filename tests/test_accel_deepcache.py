"""DeepCache: the three-run test, the `deepcache` package as oracle, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques, parse_technique
from genaccel.accel.deepcache import DeepCacheConfig
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from tests.conftest import hooked


def run(pipe, steps: int = 6) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipe("a red circle", num_inference_steps=steps, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(3)).images





def test_three_runs(sd4) -> None:  # type: ignore[no-untyped-def]
    baseline = run(sd4)
    handle = apply_techniques(sd4, [DeepCacheConfig(interval=3, branch=0)])
    calls: list[int] = []
    hook = sd4.unet.register_forward_pre_hook(lambda m, a: calls.append(1))
    enabled = run(sd4)
    hook.remove()
    handle.remove()
    removed = run(sd4)
    assert len(calls) == 6
    diff = np.abs(enabled - baseline)
    assert 0 < diff.mean() < 0.05 and diff.max() < 0.35  # stated tolerance on [0, 1] images
    assert np.abs(removed - baseline).max() <= 1e-4
    assert hooked(sd4.unet) == []


@pytest.mark.parametrize("branch", [0, 1, 4])
def test_matches_the_deepcache_package(sd4, branch: int) -> None:  # type: ignore[no-untyped-def]
    oracle_pkg = pytest.importorskip("DeepCache")
    helper = oracle_pkg.DeepCacheSDHelper(pipe=sd4)
    helper.set_params(cache_interval=3, cache_branch_id=branch)
    helper.enable()
    try:
        oracle = run(sd4)
    finally:
        helper.disable()
        for module in sd4.unet.modules():  # the package does not restore every forward it replaced
            module.__dict__.pop("forward", None)
    handle = apply_techniques(sd4, [DeepCacheConfig(interval=3, branch=branch)])
    ours = run(sd4)
    handle.remove()
    assert np.abs(ours - oracle).max() <= 1e-3


def test_interval_one_is_exact_and_state_resets(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    baseline = run(tiny_sd, 4)
    handle = apply_techniques(tiny_sd, [DeepCacheConfig(interval=1)])
    assert np.abs(run(tiny_sd, 4) - baseline).max() <= 1e-5
    handle.remove()
    handle = apply_techniques(tiny_sd, [DeepCacheConfig(interval=2)])
    first = run(tiny_sd, 4)
    handle.reset()
    assert np.array_equal(run(tiny_sd, 4), first)  # a reset job does not see the previous job's features
    handle.remove()


def test_batch_shape_change_recomputes(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    handle = apply_techniques(tiny_sd, [DeepCacheConfig(interval=5)])
    unet = tiny_sd.unet
    enc = torch.zeros(2, 77, 16)
    unet(torch.zeros(2, 4, 8, 8), 10, enc)
    out = unet(torch.zeros(1, 4, 8, 8), 10, enc[:1]).sample  # would reuse batch-2 features without the guard
    assert out.shape[0] == 1
    handle.remove()


def test_apply_twice_is_refused(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    handle = apply_techniques(tiny_sd, [DeepCacheConfig()])
    with pytest.raises(ValueError, match="already enabled"):
        apply_techniques(tiny_sd, [DeepCacheConfig()])
    handle.remove()
    assert hooked(tiny_sd.unet) == []


def test_bad_options_and_family(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match=r"interval=0 must be between 1 and 50"):
        parse_technique(TechniqueSpec(name="deepcache", options={"interval": 0}))
    with pytest.raises(InvalidRequest, match=r"techniques.deepcache='depth' is invalid: unknown option"):
        parse_technique(TechniqueSpec(name="deepcache", options={"depth": 2}))
    request = JobRequest.from_flat({"prompt": "x", "model": "tiny-dit", "techniques": [{"name": "deepcache"}]})
    with pytest.raises(InvalidRequest, match=r"does not fit the image-dit denoiser family.*first-block cache, PAB"):
        prepare_request(request, ModelRegistry(settings), settings)


def test_job_records_techniques_and_leaves_pipeline_clean(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipelines.engine import LocalEngine

    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": "x", "steps": 4, "techniques": [
            {"name": "deepcache", "options": {"interval": 2}}]}), output_dir=tmp_path)
        (done,) = engine.wait([job.id])
        pipe_entries = list(engine.runner.cache._entries.values())
    assert done.state == "succeeded", done.error
    assert done.metadata["techniques"] == [{"name": "deepcache", "interval": 2, "branch": 0}]
    assert hooked(pipe_entries[0][0].unet) == []
