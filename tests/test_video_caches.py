"""DiT caches on every served video transformer: the three-run test where a cache works (baseline,
cached, cached again after reset, clean after removal), and the refusal before queueing, with its
reason and alternative, where diffusers 0.42.1's hook fails on that layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques, parse_technique
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.modality import RunHooks
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry, builtin_models
from pipelines.video import VideoAdapter

OPTIONS: dict[str, dict[str, Any]] = {
    "fbcache": {"threshold": 0.5},
    "pab": {"skip": 2, "window_low": 0, "window_high": 1000},
    "taylorseer": {"interval": 2, "warmup": 1},
    "taylorseer-model": {"interval": 3, "warmup": 1, "scope": "model"},
    "magcache": {"ratios": [1.0, 0.99, 0.98, 0.97], "threshold": 0.5, "retention": 0.0},
    "fastercache": {"window_high": 1000, "attention_only": True},
}
WORKS = [("tiny-wan", t) for t in OPTIONS] + [("tiny-ltx", t) for t in OPTIONS] + [
    ("tiny-latte", "pab"), ("tiny-latte", "taylorseer"), ("tiny-latte", "taylorseer-model"),
    ("tiny-latte", "fastercache")]
REFUSED = [
    ("tiny-wan", "fastercache", {}, "its guidance mode fails on Wan: Wan runs the conditional and unconditional "
     "passes as separate transformer calls", "pass fastercache with attention_only=true, or use pab"),
    ("tiny-ltx", "fastercache", {}, "its guidance mode fails on LTX: LTX packs its tokens to 3-D",
     "pass fastercache with attention_only=true, or use pab"),
    ("tiny-latte", "fbcache", {}, "fails on Latte: its blocks alternate between spatial (B*F, N, C) and temporal "
     "(B*N, F, C) layouts", "use pab, taylorseer or fastercache"),
    ("tiny-latte", "magcache", OPTIONS["magcache"], "fails on Latte", "use pab, taylorseer or fastercache"),
    ("tiny-animatediff", "pab", {}, "does not fit the video-unet denoiser family", "use deepcache for UNets"),
]
_PIPES: dict[str, Any] = {}


def left_behind(module: torch.nn.Module) -> list[str]:
    """Hooks or instance ``forward`` overrides still on ``module`` (the video pipelines' own
    ``cache_context`` leaves an empty hook registry on the transformer: that one is fine)."""
    found = []
    for name, m in module.named_modules():
        registry = getattr(m, "_diffusers_hook", None)
        if (registry is not None and registry.hooks) or ("forward" in m.__dict__ and registry is None):
            found.append(name)
    return found


def pipe_of(name: str) -> Any:
    if name not in _PIPES:
        pipe = builtin_models()[name].builder()  # type: ignore[misc]
        pipe.set_progress_bar_config(disable=True)
        _PIPES[name] = pipe
    return _PIPES[name]


def clip(pipe: Any, request: JobRequest) -> np.ndarray:
    (outputs,) = VideoAdapter().generate(pipe, [request], RunHooks(lambda s, t: None))
    return np.stack([np.asarray(f, dtype=np.float32) for f in outputs[0].frames])  # type: ignore[union-attr]


def request_for(settings: Settings, model: str, technique: str | None = None, **options: Any) -> JobRequest:
    flat = {"modality": "video", "prompt": "a red ball", "model": model, "steps": 4, "seed": 1, "guidance": 3.0}
    if technique:
        flat["techniques"] = [{"name": technique, "options": options}]
    request, _ = prepare_request(JobRequest.from_flat(flat), ModelRegistry(settings), settings)
    return request


@pytest.mark.parametrize(("model", "technique"), WORKS)
def test_three_runs(settings: Settings, model: str, technique: str) -> None:
    pipe = pipe_of(model)
    name = technique.split("-")[0]  # "taylorseer-model": taylorseer with scope=model
    request = request_for(settings, model, name, **OPTIONS[technique])  # accepted before queueing
    base = clip(pipe, request)
    handle = apply_techniques(pipe, [parse_technique(TechniqueSpec(name=name, options=OPTIONS[technique]))])
    try:
        handle.reset()
        fast = clip(pipe, request)
        handle.reset()
        again = clip(pipe, request)
    finally:
        handle.remove()
    after = clip(pipe, request)
    assert np.abs(fast - base).max() > 0, f"{technique} never skipped anything on {model}"
    np.testing.assert_array_equal(fast, again)  # reset: no state from the previous job
    np.testing.assert_array_equal(after, base)  # removed: the pipeline is clean
    assert left_behind(pipe.transformer) == []


@pytest.mark.parametrize(("model", "technique", "options", "why", "fix"), REFUSED)
def test_refused_before_queueing(settings: Settings, model: str, technique: str, options: dict[str, Any],
                                 why: str, fix: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        request_for(settings, model, technique, **options)
    assert why in str(err.value) and fix in str(err.value)


def test_deepcache_and_vae_slicing_on_animatediff(settings: Settings) -> None:
    pipe = pipe_of("tiny-animatediff")
    flat = {"modality": "video", "prompt": "a ball", "model": "tiny-animatediff", "steps": 3, "seed": 1,
            "frames": 4, "guidance": 1.0,
            "techniques": [{"name": "deepcache", "options": {"interval": 2}}]}
    request, _info = prepare_request(JobRequest.from_flat(flat), ModelRegistry(settings), settings)
    base = clip(pipe, request)
    handle = apply_techniques(pipe, [parse_technique(TechniqueSpec(name="deepcache", options={"interval": 2}))])
    try:
        handle.reset()
        fast = clip(pipe, request)
    finally:
        handle.remove()
    assert np.abs(fast - base).max() > 0 and np.array_equal(clip(pipe, request), base)
    pipe.vae.enable_slicing()  # decodes the frames one by one: the same clip
    try:
        sliced = clip(pipe, request)
    finally:
        pipe.vae.disable_slicing()
    np.testing.assert_allclose(sliced, base, atol=1.0)


def test_motion_lora_on_animatediff_through_the_lora_technique(settings: Settings) -> None:
    """A LoRA on the motion modules and the UNet's attention (AnimateLCM's shape), saved like the
    published ones, loads through the ``lora`` technique and leaves the pipeline as it was."""
    from diffusers import AnimateDiffPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    maker = builtin_models()["tiny-animatediff"].builder()  # type: ignore[misc]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        maker.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                          target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    assert any("motion_modules" in k for k in get_peft_model_state_dict(maker.unet))
    AnimateDiffPipeline.save_lora_weights(settings.home / "loras" / "motion-test",
                                          unet_lora_layers=get_peft_model_state_dict(maker.unet),
                                          safe_serialization=True)
    flat = {"modality": "video", "prompt": "a ball", "model": "tiny-animatediff", "steps": 2, "seed": 1,
            "frames": 4, "guidance": 1.0, "techniques": [{"name": "lora", "options": {"adapter": "motion-test"}}]}
    request, _ = prepare_request(JobRequest.from_flat(flat), ModelRegistry(settings), settings)  # accepted
    pipe = pipe_of("tiny-animatediff")
    base = clip(pipe, request)
    handle = apply_techniques(pipe, [parse_technique(TechniqueSpec(name="lora", options={"adapter": "motion-test"}))])
    try:
        with_lora = clip(pipe, request)
    finally:
        handle.remove()
    assert np.abs(with_lora - base).max() > 0
    np.testing.assert_array_equal(clip(pipe, request), base)
    # AnimateLCM's recipe: the LoRA with the consistency sampler, accepted and undone together
    few = {**flat, "techniques": [*flat["techniques"], {"name": "solver", "options": {"kind": "lcm"}}]}
    request, _ = prepare_request(JobRequest.from_flat(few), ModelRegistry(settings), settings)
    scheduler = pipe.scheduler
    handle = apply_techniques(pipe, [parse_technique(t) for t in request.techniques])
    try:
        assert type(pipe.scheduler).__name__ == "LCMScheduler"
        assert len(clip(pipe, request)) == 4
    finally:
        handle.remove()
    assert pipe.scheduler is scheduler


@pytest.mark.parametrize("model", ["tiny-wan", "tiny-ltx", "tiny-latte", "tiny-cogvideox", "tiny-animatediff"])
def test_profiles_accelerate_every_video_family(settings: Settings, model: str) -> None:
    from genaccel.profiles import PROFILES
    from pipelines.prepare import technique_configs

    info = builtin_models()[model]
    for profile in ("balanced", "fast", "max", "turbo"):
        flat = {"modality": "video", "prompt": "x", "model": model, "profile": profile}
        request, _ = prepare_request(JobRequest.from_flat(flat), ModelRegistry(settings), settings)  # accepted
        names = [c.name for c in technique_configs(request, info.family)]
        assert names == (["deepcache"] if info.family == "video-unet" else ["taylorseer"]), (profile, names)
    assert PROFILES["off"].recipe(info.family).techniques == ()
