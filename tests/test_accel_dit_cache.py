"""DiT caches (diffusers hooks wrapped for every DiT pipeline): the three-run test, per-sample
decisions that make a result independent of its batch, per-job reset, refusals, and the pinned
non-public diffusers names they rely on."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques, parse_technique
from genaccel.accel.dit_cache import FasterCache, FirstBlockCache, MagCache, PyramidAttentionBroadcast, TaylorSeer
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from tests.conftest import hooked

CONFIGS = [FirstBlockCache(threshold=0.5), PyramidAttentionBroadcast(skip=2, window_low=0, window_high=1000),
           TaylorSeer(interval=2, warmup=2), TaylorSeer(interval=3, warmup=2, scope="model"),
           FasterCache(window_high=1000, uncond_window_high=1000, uncond_skip=3),
           MagCache(threshold=0.5, retention=0.2, ratios=(1.0, 0.9, 0.95, 1.0, 0.98))]


@pytest.fixture(scope="module")
def dit():  # type: ignore[no-untyped-def]
    """A PixArt pipeline with 6 blocks (enough for a first block and a tail)."""
    from diffusers import PixArtTransformer2DModel

    from pipelines.tiny import build_tiny_dit

    pipe = build_tiny_dit()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe.transformer = PixArtTransformer2DModel(
            sample_size=8, num_layers=6, patch_size=2, attention_head_dim=8, num_attention_heads=3,
            caption_channels=pipe.text_encoder.config.d_model, in_channels=4, out_channels=8,
            cross_attention_dim=24, attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
            norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe: Any, prompts: list[str] | str = "a red circle", seeds: tuple[int, ...] = (3,),
        steps: int = 10, call: Any = None) -> np.ndarray:
    return (call or pipe)(prompt=prompts, num_inference_steps=steps, height=64, width=64, output_type="np",
                          guidance_scale=4.5, generator=[torch.Generator().manual_seed(s) for s in seeds],
                          use_resolution_binning=False, clean_caption=False).images


def hook_names(module: torch.nn.Module) -> list[str]:
    found = []
    for name, m in module.named_modules():
        registry = getattr(m, "_diffusers_hook", None)
        if registry is not None and registry.hooks:
            found.append(f"{name}:{list(registry.hooks)}")
    return found


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.name}-{getattr(c, 'scope', '')}".rstrip("-"))
def test_three_runs(dit: Any, config: Any) -> None:
    from genaccel.accel.base import call_wrappers

    base = run(dit)
    techniques = apply_techniques(dit, [config])
    try:
        call = dit.__call__
        for wrap in call_wrappers(dit):  # what pipelines.image does (magcache follows the step count)
            call = wrap(call)
        techniques.reset()
        fast = run(dit, call=call)
        techniques.reset()
        again = run(dit, call=call)
    finally:
        techniques.remove()
    assert not call_wrappers(dit)
    after = run(dit)
    assert np.abs(fast - base).max() > 1e-6, "the cache never skipped anything"
    assert np.abs(fast - base).mean() < 0.1  # close to the baseline (tiny random model, 10 steps)
    np.testing.assert_array_equal(fast, again)  # reset: a second job sees no state from the first
    np.testing.assert_allclose(after, base, atol=1e-4)
    assert hook_names(dit.transformer) == []
    assert hooked(dit.transformer) == []  # no empty registry, no instance forward left behind


def test_first_block_cache_decides_per_sample(dit: Any) -> None:
    techniques = apply_techniques(dit, [FirstBlockCache(threshold=0.5)])
    try:
        techniques.reset()
        alone = run(dit, ["a red circle"], (3,))
        techniques.reset()
        together = run(dit, ["a red circle", "a blue star on a black background"], (3, 8))
    finally:
        techniques.remove()
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)


def test_first_block_cache_per_batch_mode_runs(dit: Any) -> None:
    techniques = apply_techniques(dit, [FirstBlockCache(threshold=0.5, per_sample=False)])
    try:
        techniques.reset()
        image = run(dit)
    finally:
        techniques.remove()
    assert image.shape == (1, 64, 64, 3)


def test_caches_are_refused_on_unets_and_validate_options(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    request = JobRequest(prompt="a cat", model="tiny-sd", techniques=(TechniqueSpec(name="fbcache"),))
    with pytest.raises(InvalidRequest, match=r"does not fit the sd-unet denoiser family.*use deepcache"):
        prepare_request(request, registry, settings)
    with pytest.raises(InvalidRequest, match="skip=1 must be between 2 and 10"):
        parse_technique(TechniqueSpec(name="pab", options={"skip": 1}))
    ok = JobRequest(prompt="a cat", model="tiny-dit", techniques=(TechniqueSpec(name="taylorseer"),))
    assert prepare_request(ok, registry, settings)[0].techniques[0].name == "taylorseer"


def test_runs_through_the_job_path(dit: Any) -> None:
    """The techniques work on a deep copy too (what a worker's cache holds is a separate object)."""
    other = copy.deepcopy(dit)
    techniques = apply_techniques(other, [PyramidAttentionBroadcast(window_low=0, window_high=1000)])
    techniques.reset()
    assert run(other).shape == (1, 64, 64, 3)
    techniques.remove()
    assert hook_names(other.transformer) == []


def test_pinned_private_diffusers_names() -> None:
    """dit_cache relies on these non-public names; a diffusers upgrade that moves them fails here."""
    from diffusers.hooks import first_block_cache, hooks, pyramid_attention_broadcast, taylorseer_cache

    assert hooks.CacheContext("x", step_index=1, timestep=5.0).step_index == 1
    assert callable(hooks._set_cache_context)
    assert first_block_cache._FBC_LEADER_BLOCK_HOOK == "fbc_leader_block_hook"
    assert first_block_cache._FBC_BLOCK_HOOK == "fbc_block_hook"
    assert pyramid_attention_broadcast._PYRAMID_ATTENTION_BROADCAST_HOOK == "pyramid_attention_broadcast"
    assert taylorseer_cache._TAYLORSEER_CACHE_HOOK == "taylorseer_cache"
    from diffusers.hooks import faster_cache

    assert faster_cache._FASTER_CACHE_DENOISER_HOOK == "faster_cache_denoiser"
    assert faster_cache._FASTER_CACHE_BLOCK_HOOK == "faster_cache_block"
    from diffusers.hooks import mag_cache

    assert mag_cache._MAG_CACHE_LEADER_BLOCK_HOOK == "mag_cache_leader_block_hook"
    assert mag_cache._MAG_CACHE_BLOCK_HOOK == "mag_cache_block_hook"
    assert len(mag_cache.nearest_interp(torch.tensor([1.0, 2.0, 3.0]), 5)) == 5


def test_fastercache_needs_classifier_free_guidance(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    spec = (TechniqueSpec(name="fastercache"),)
    with pytest.raises(InvalidRequest, match=r"fastercache.*needs classifier-free guidance.*use fbcache"):
        prepare_request(JobRequest.from_flat({"prompt": "a cat", "model": "tiny-dit", "guidance": 1.0,
                                              "techniques": [{"name": "fastercache"}]}), registry, settings)
    ok = JobRequest(prompt="a cat", model="tiny-dit", techniques=spec)
    assert prepare_request(ok, registry, settings)[0].params.guidance_scale == 4.5


def test_magcache_needs_a_calibration(settings: Settings, dit: Any, tmp_path: Any) -> None:
    from genaccel.accel.calibration import magcache_ratios, measure_magcache_ratios, save_magcache_ratios

    ratios = measure_magcache_ratios(dit, ["a red circle", "a blue square"], 6, guidance_scale=4.5, height=64,
                                     width=64, use_resolution_binning=False, clean_caption=False)
    assert len(ratios) == 6 and ratios[0] == 1.0 and all(r > 0 for r in ratios)
    folder = tmp_path / "model"
    folder.mkdir()
    assert magcache_ratios(folder, settings) is None
    save_magcache_ratios(settings, folder, ratios, 6)
    assert magcache_ratios(folder, settings) == ratios
    with pytest.raises(InvalidRequest, match=r"magcache.*has no calibrated ratios.*genaccel calibrate"):
        apply_techniques(dit, [MagCache()])  # a built pipeline with no folder and no ratios
    with pytest.raises(InvalidRequest, match="max_skip=0 must be between 1 and 10"):
        parse_technique(TechniqueSpec(name="magcache", options={"max_skip": 0}))


def test_calibrate_command_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    from genaccel.cli import main

    assert main(["calibrate", "--model", "tiny-dit"]) == 2
    assert "calibration is for DiT models loaded from a folder" in capsys.readouterr().err
    assert main(["calibrate", "--model", "shapes-dit", "--steps", "1"]) == 2
    assert "steps=1 is invalid: is out of range" in capsys.readouterr().err


def test_magcache_without_calibration_is_refused_before_the_job(settings: Settings, tmp_path: Any) -> None:
    from pipelines.registry import ModelDefaults, ModelInfo

    registry = ModelRegistry(settings)
    registry.add(ModelInfo("my-dit", "image", "image-dit", "folder", str(tmp_path), "PixArtAlphaPipeline",
                           ModelDefaults(steps=20, guidance_scale=4.5, width=64, height=64)))
    request = JobRequest(prompt="a cat", model="my-dit", techniques=(TechniqueSpec(name="magcache"),))
    with pytest.raises(InvalidRequest, match=r"has no calibrated ratios for my-dit.*genaccel calibrate --model my-dit"):
        prepare_request(request, registry, settings)
    shipped = JobRequest(prompt="a cat", model="shapes-dit", techniques=(TechniqueSpec(name="magcache"),))
    assert prepare_request(shipped, registry, settings)[0].techniques[0].name == "magcache"
