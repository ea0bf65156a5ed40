"""DeepCache: the three-run test, the `deepcache` package as oracle, and refusals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques, check_family, parse_technique
from genaccel.accel.deepcache import DeepCacheConfig, _deep_modules
from genaccel.accel.levers import VAETiling
from genaccel.errors import InvalidRequest, TechniqueAlreadyApplied
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
    with pytest.raises(TechniqueAlreadyApplied, match="technique deepcache is already applied"):
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


@pytest.fixture(scope="module")
def motion_unet():  # type: ignore[no-untyped-def]
    """An AnimateDiff ``UNetMotionModel`` at toy width: 2 levels, 2 layers each, motion modules everywhere."""
    from diffusers import UNetMotionModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNetMotionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=8,
                               down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
                               up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
                               norm_num_groups=8, cross_attention_dim=16, num_attention_heads=2,
                               motion_num_attention_heads=2, motion_max_seq_length=8)
    return unet.eval()


def run_motion(unet, steps: int = 6) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """A plain denoising-like loop: same sample shape every call, a new timestep each call."""
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 4, 3, 8, 8, generator=g)  # (B, C, F, H, W)
    enc = torch.randn(3, 5, 16, generator=g)  # one prompt embedding per frame, as AnimateDiff passes it
    outs = []
    with torch.no_grad():
        for t in torch.linspace(900, 100, steps).long():
            out = unet(sample, t, enc).sample
            outs.append(out)
            sample = sample - 0.1 * out
    return outs


@pytest.mark.parametrize("branch", [0, 1])
def test_motion_unet_three_runs(motion_unet, branch: int) -> None:  # type: ignore[no-untyped-def]
    unet, pipe = motion_unet, SimpleNamespace(unet=motion_unet)
    motion = {name: m for name, m in unet.named_modules() if name.split(".")[-2:-1] == ["motion_modules"]}
    chosen = {id(m) for m in _deep_modules(unet, branch)}
    deep = [name for name, m in unet.named_modules() if id(m) in chosen]
    reused = {name for name in motion if any(name == d or name.startswith(f"{d}.") for d in deep)}  # or a parent
    # the motion modules of the partly skipped blocks are chosen themselves, by layer like resnets
    last_up = "up_blocks.1.motion_modules"
    if branch == 0:
        assert {f"{last_up}.0", f"{last_up}.1"} <= reused and f"{last_up}.2" not in reused
    else:
        assert "down_blocks.0.motion_modules.1" in reused and "down_blocks.0.motion_modules.0" not in reused
        assert f"{last_up}.0" in reused and {f"{last_up}.1", f"{last_up}.2"}.isdisjoint(reused)
    assert id(unet.up_blocks[1].motion_modules[0]) in chosen

    baseline = run_motion(unet)
    handle = apply_techniques(pipe, [DeepCacheConfig(interval=3, branch=branch)])
    ran: list[set[str]] = []  # per UNet call: motion modules whose real forward ran (seen by their proj_in)
    hooks = [unet.register_forward_pre_hook(lambda m, a: ran.append(set()))]
    hooks += [m.proj_in.register_forward_hook(lambda m, a, o, n=name: ran[-1].add(n)) for name, m in motion.items()]
    enabled = run_motion(unet)
    for hook in hooks:
        hook.remove()
    handle.remove()
    removed = run_motion(unet)

    assert ran[0] == ran[3] == set(motion)
    for call in (1, 2, 4, 5):
        assert ran[call] == set(motion) - reused
    assert torch.equal(enabled[0], baseline[0])
    diff = [(e - b).abs().max().item() / b.abs().max().item() for e, b in zip(enabled, baseline, strict=True)]
    assert 0 < max(diff) < 0.2
    assert max((r - b).abs().max().item() for r, b in zip(removed, baseline, strict=True)) <= 1e-4
    assert hooked(unet) == []


def test_motion_unet_interval_one_is_exact(motion_unet) -> None:  # type: ignore[no-untyped-def]
    baseline = run_motion(motion_unet)
    handle = apply_techniques(SimpleNamespace(unet=motion_unet), [DeepCacheConfig(interval=1)])
    enabled = run_motion(motion_unet)
    handle.remove()
    assert all(torch.equal(e, b) for e, b in zip(enabled, baseline, strict=True))
    assert hooked(motion_unet) == []


def test_video_unet_family_is_accepted() -> None:
    check_family(DeepCacheConfig(), "video-unet")
    check_family(VAETiling(), "video-unet")
