"""Techniques cannot leave a pipeline dirty (issue 13).

Every pair of techniques a family allows is applied to one pipeline, a job runs, the pair is
removed, and the next plain job equals a freshly built pipeline's output bit for bit with no hook
left. Then the guards: a technique applied twice, a conflict at apply time, an apply that fails
half-way, a remove that fails (the model cache drops the pipeline), and conflicting techniques
refused before queueing (``prepare_request``, CLI exit 2, API 422) naming both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import RequestContext, applied, apply_techniques, check_techniques, parse_technique
from genaccel.accel.base import _APPLY, _BY_NAME, call_wrappers
from genaccel.accel.deepcache import DeepCacheConfig
from genaccel.accel.dit_cache import FirstBlockCache, PyramidAttentionBroadcast
from genaccel.accel.hooks import Patches
from genaccel.accel.solver import SolverConfig
from genaccel.accel.tome import ToMeConfig
from genaccel.errors import (
    InvalidRequest,
    TechniqueAlreadyApplied,
    TechniqueConflict,
    TechniqueFailed,
    TechniqueRemoveFailed,
)
from genaccel.families import Family
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.image import generate_images
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from pipelines.tiny import build_tiny_dit, build_tiny_sd
from tests.conftest import hooked

BUILDERS: dict[Family, Callable[[], Any]] = {Family.SD_UNET: build_tiny_sd, Family.IMAGE_DIT: build_tiny_dit}
MODELS = {Family.SD_UNET: "tiny-sd", Family.IMAGE_DIT: "tiny-dit"}
SKIPPED = {
    "compile": "compiling takes minutes on CPU and needs a C compiler; test_accel_levers checks its removal",
    "lora": "needs an adapter file, and adapters stay loaded (disabled) by design; test_accel_lora checks removal",
}
OPTIONS = {"magcache": {"ratios": [1.0, 0.9, 0.95]}}
"""Options where the default cannot run on a built-in model (MagCache needs a calibrated curve)."""
REFUSED = {
    Family.SD_UNET: set(),  # tome and todo stack (tome first): see the ordering test below
    Family.IMAGE_DIT: {frozenset(p) for p in itertools.combinations(
        ["fbcache", "pab", "taylorseer", "fastercache", "magcache"], 2)},  # one DiT cache per request
}
GUIDANCE = 4.5


def context(family: Family) -> RequestContext:
    return RequestContext(family=family, model=MODELS[family], guidance_scale=GUIDANCE, steps=2)


def candidates(family: Family) -> list[Any]:
    """Every technique that fits ``family``, with default options (except ``OPTIONS``)."""
    configs = [parse_technique(TechniqueSpec(name=name, options=OPTIONS.get(name, {})))
               for name in sorted(_BY_NAME) if name not in SKIPPED and name != "lora"]
    return [c for c in configs if family in c.families]


def pairs(family: Family) -> tuple[list[tuple[Any, Any]], set[frozenset[str]]]:
    """The pairs ``check_techniques`` allows (in an order it allows), and the refused ones."""
    allowed, refused = [], set()
    for a, b in itertools.combinations(candidates(family), 2):
        for order in ((a, b), (b, a)):
            try:
                check_techniques(list(order), context(family))
            except InvalidRequest:
                continue
            allowed.append(order)
            break
        else:
            refused.add(frozenset((a.name, b.name)))
    return allowed, refused


ALL_PAIRS = [(family, pair) for family in BUILDERS for pair in pairs(family)[0]]


def plain(pipe: Any) -> np.ndarray:
    """A plain 2-step generation, float output, fixed generator."""
    extra = {"use_resolution_binning": False, "clean_caption": False} if hasattr(pipe, "transformer") else {}
    with torch.no_grad():
        return pipe("a red circle", num_inference_steps=2, height=64, width=64, guidance_scale=GUIDANCE,
                    output_type="np", generator=torch.Generator().manual_seed(3), **extra).images


def job(pipe: Any, family: Family) -> None:
    """A 2-step job through the adapter (call wrappers, PIL output)."""
    request = JobRequest.from_flat({"prompt": "a blue star", "model": MODELS[family], "steps": 2, "seed": 5,
                                    "width": 64, "height": 64, "guidance": GUIDANCE})
    images = generate_images(pipe, request, lambda s, t: None)
    assert len(images) == 1


@pytest.fixture(scope="module")
def fresh() -> dict[Family, np.ndarray]:
    """Each family's plain output from a pipeline no technique ever touched."""
    out = {}
    for family, build in BUILDERS.items():
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        out[family] = plain(pipe)
    return out


@pytest.fixture(scope="module")
def pipes() -> dict[Family, Any]:
    """One pipeline per family that every pair is applied to and removed from, in turn."""
    out = {}
    for family, build in BUILDERS.items():
        out[family] = build()
        out[family].set_progress_bar_config(disable=True)
    return out


def denoiser(pipe: Any) -> torch.nn.Module:
    return getattr(pipe, "unet", None) or pipe.transformer


def assert_clean(pipe: Any, reference: np.ndarray) -> None:
    assert applied(pipe) == [] and call_wrappers(pipe) == []
    assert hooked(denoiser(pipe)) == [] and hooked(pipe.vae) == []
    assert np.array_equal(plain(pipe), reference)


def test_the_pairs_each_family_refuses() -> None:
    for family, expected in REFUSED.items():
        assert pairs(family)[1] == expected


@pytest.mark.parametrize(("family", "pair"), ALL_PAIRS, ids=[f"{f}:{a.name}+{b.name}" for f, (a, b) in ALL_PAIRS])
def test_pair_applied_run_removed_leaves_a_fresh_pipeline(pipes: dict[Family, Any], fresh: dict[Family, np.ndarray],
                                                          family: Family, pair: tuple[Any, Any]) -> None:
    pipe = pipes[family]
    scheduler = pipe.scheduler
    techniques = apply_techniques(pipe, list(pair))
    try:
        assert [c.name for c in applied(pipe)] == [c.name for c in pair]
        techniques.reset()
        job(pipe, family)
    finally:
        techniques.remove()
    assert pipe.scheduler is scheduler
    assert_clean(pipe, fresh[family])


@pytest.mark.parametrize("family", list(BUILDERS))
def test_every_technique_refuses_a_second_apply(pipes: dict[Family, Any], family: Family) -> None:
    pipe = pipes[family]
    for config in candidates(family):
        techniques = apply_techniques(pipe, [config])
        try:
            with pytest.raises(TechniqueAlreadyApplied, match=rf"technique {config.name} is already applied"):
                apply_techniques(pipe, [config])
        finally:
            techniques.remove()
        assert applied(pipe) == [] and hooked(denoiser(pipe)) == [], config.name


def test_a_conflict_is_refused_at_apply_time_too(tiny_dit: Any) -> None:
    techniques = apply_techniques(tiny_dit, [FirstBlockCache()])
    try:
        with pytest.raises(TechniqueConflict, match=r"technique pab conflicts with fbcache \(both are DiT caches"):
            apply_techniques(tiny_dit, [PyramidAttentionBroadcast()])
    finally:
        techniques.remove()
    assert hooked(tiny_dit.transformer) == []


def test_a_module_shared_by_two_pipelines_is_not_hooked_twice(tiny_sd: Any) -> None:
    from types import SimpleNamespace

    first = apply_techniques(tiny_sd, [DeepCacheConfig()])
    try:
        with pytest.raises(TechniqueAlreadyApplied, match=r"deepcache already has its hook genaccel_deepcache"):
            apply_techniques(SimpleNamespace(unet=tiny_sd.unet), [DeepCacheConfig()])
    finally:
        first.remove()
    assert hooked(tiny_sd.unet) == []


def _fail_on_hook(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """``Patches.hook`` raises on its ``n``-th call (after ``n - 1`` hooks went on)."""
    real = Patches.hook
    calls = iter(range(1, 10_000))

    def hook(self: Patches, module: torch.nn.Module, hook: Any, name: str) -> None:
        if next(calls) == n:
            raise RuntimeError("injected failure")
        real(self, module, hook, name)

    monkeypatch.setattr(Patches, "hook", hook)


@pytest.mark.parametrize("name", ["deepcache", "tome", "todo"])
def test_an_apply_failing_half_way_undoes_its_own_hooks(pipes: dict[Family, Any], fresh: dict[Family, np.ndarray],
                                                        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    pipe = pipes[Family.SD_UNET]
    _fail_on_hook(monkeypatch, 3)
    with pytest.raises(TechniqueFailed, match=rf"technique {name} failed while being applied.*injected failure") as err:
        apply_techniques(pipe, [SolverConfig(), parse_technique(TechniqueSpec(name=name))])
    assert err.value.code == "technique_failed"
    monkeypatch.undo()
    assert_clean(pipe, fresh[Family.SD_UNET])


def test_a_diffusers_apply_failing_half_way_is_undone(pipes: dict[Family, Any], fresh: dict[Family, np.ndarray],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from genaccel.accel import dit_cache

    real = dit_cache.apply_first_block_cache

    def half(transformer: torch.nn.Module, config: Any) -> None:
        real(transformer, config)
        assert hooked(transformer) != []  # the cache's hooks are on when it fails
        raise RuntimeError("injected failure")

    monkeypatch.setattr(dit_cache, "apply_first_block_cache", half)
    pipe = pipes[Family.IMAGE_DIT]
    with pytest.raises(TechniqueFailed, match=r"technique fbcache failed while being applied.*injected failure"):
        apply_techniques(pipe, [SolverConfig(), FirstBlockCache()])
    monkeypatch.undo()
    assert_clean(pipe, fresh[Family.IMAGE_DIT])


def test_the_second_technique_failing_removes_the_first(pipes: dict[Family, Any], fresh: dict[Family, np.ndarray],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = pipes[Family.SD_UNET]

    def boom(pipe: Any, config: Any) -> Any:
        raise ValueError("injected failure")

    monkeypatch.setitem(_APPLY, ToMeConfig, boom)
    with pytest.raises(TechniqueFailed, match=r"technique tome failed while being applied to StableDiffusionPipeline "
                                              r"\(ValueError: injected failure\); fix: run the request without tome"):
        apply_techniques(pipe, [SolverConfig(), DeepCacheConfig(), ToMeConfig()])
    monkeypatch.undo()
    assert_clean(pipe, fresh[Family.SD_UNET])


def test_a_failing_remove_tries_everything_then_says_so() -> None:
    pipe = build_tiny_sd()
    techniques = apply_techniques(pipe, [DeepCacheConfig(), ToMeConfig()])

    def boom() -> None:
        raise RuntimeError("injected failure")

    techniques.handles[0].patches.on_undo("a step that fails", boom)  # type: ignore[attr-defined]
    with pytest.raises(TechniqueRemoveFailed, match=r"removing technique deepcache failed \(a step that fails: "
                                                    r"RuntimeError: injected failure\)") as err:
        techniques.remove()
    assert err.value.code == "technique_remove_failed"
    assert hooked(pipe.unet) == []  # every other step still ran
    assert [c.name for c in applied(pipe)] == ["deepcache"]  # recorded as not clean


def test_the_model_cache_drops_a_pipeline_whose_remove_failed() -> None:
    from pipelines.loader import CacheKey, ModelCache

    cache, key = ModelCache(), CacheKey("tiny-sd", "float32", "cpu")
    with cache.use(key, object) as first:
        pass
    with pytest.raises(TechniqueRemoveFailed), cache.use(key, object) as same:
        assert same is first
        raise TechniqueRemoveFailed(["deepcache"], "injected")
    assert len(cache) == 0 and cache.loads == 1
    with cache.use(key, object) as second:
        assert second is not first
    assert cache.evict(key) and not cache.evict(key)


def test_todo_must_come_after_tome() -> None:
    ctx = context(Family.SD_UNET)
    check_techniques([parse_technique(TechniqueSpec(name=n)) for n in ("tome", "todo")], ctx)
    with pytest.raises(InvalidRequest, match=r"techniques='tome' is invalid: must come before todo: .*; "
                                             r"fix: list tome before todo"):
        check_techniques([parse_technique(TechniqueSpec(name=n)) for n in ("todo", "tome")], ctx)


# ---------------------------------------------------------------------------------------------
# Refused before queueing.


def _request(**flat: Any) -> JobRequest:
    return JobRequest.from_flat({"prompt": "a cat", "model": "tiny-dit", **flat})


def test_prepare_refuses_two_dit_caches_from_profile_and_request(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    with pytest.raises(InvalidRequest, match=r"techniques='fbcache' is invalid: conflicts with taylorseer from "
                                             r"profile balanced \(both are DiT caches: one request can use one\); "
                                             r"fix: drop fbcache or taylorseer"):
        prepare_request(_request(profile="balanced", techniques=[{"name": "fbcache"}]), registry, settings)
    with pytest.raises(InvalidRequest, match=r"techniques='taylorseer' is invalid: is named twice: profile "
                                             r"balanced already applies taylorseer"):
        prepare_request(_request(profile="balanced", techniques=[{"name": "taylorseer"}]), registry, settings)
    with pytest.raises(InvalidRequest, match=r"techniques='pab' is invalid: conflicts with fbcache \(both"):
        prepare_request(_request(techniques=[{"name": "fbcache"}, {"name": "pab"}]), registry, settings)
    with pytest.raises(InvalidRequest, match=r"techniques='magcache' is invalid: has no calibrated ratios for "
                                             r"tiny-dit; fix: pass ratios"):
        prepare_request(_request(techniques=[{"name": "magcache"}]), registry, settings)
    with pytest.raises(InvalidRequest, match=r"techniques='solver' is invalid: is named twice in the request"):
        prepare_request(_request(model="tiny-sd", techniques=[{"name": "solver"}, {"name": "solver"}]),
                        registry, settings)


def test_cli_exits_2_naming_both(capsys: pytest.CaptureFixture[str]) -> None:
    from genaccel.cli import main

    code = main(["render", "a cat", "--model", "tiny-dit", "--profile", "balanced", "--technique", "fbcache"])
    err = capsys.readouterr().err
    assert code == 2 and "techniques='fbcache' is invalid: conflicts with taylorseer from profile balanced" in err


@pytest.fixture
def api(settings: Settings) -> Iterator[Any]:
    from tests.test_api import make_client

    client, _ = make_client(settings, run=False)
    yield client


def test_api_answers_422_naming_both(api: Any) -> None:
    r = api.post("/v1/jobs", json={"prompt": "a cat", "model": "tiny-dit", "profile": "balanced",
                                   "techniques": [{"name": "fbcache"}]})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and "conflicts with taylorseer" in error["message"]
    assert error["field"] == "techniques"


def test_families_are_typed_and_speech_dits_get_the_dit_caches() -> None:
    for name in sorted(_BY_NAME):
        cls = _BY_NAME[name]
        assert all(isinstance(f, Family) for f in cls.families), name
        assert all(isinstance(f, Family) for f in cls.alternatives), name
    assert Family.SPEECH_DIT in FirstBlockCache.families


def test_warnings_live_beside_the_techniques(tmp_path: Path) -> None:
    from pipelines.prepare import technique_configs, technique_warnings

    request = JobRequest.from_flat({"prompt": "a cat", "steps": 4, "guidance": 7.5, "techniques": [
        {"name": "deepcache"}, {"name": "solver", "options": {"kind": "lcm"}}]})
    warnings = technique_warnings(request, technique_configs(request, "sd-unet"))
    assert len(warnings) == 2
    assert warnings[0].startswith("deepcache at 4 steps saves little")
    assert warnings[1].startswith("lcm sampling expects a consistency-distilled model")


def test_model_folder_checks_run_before_queueing(settings: Settings, tmp_path: Path) -> None:
    import json

    from pipelines.registry import ModelDefaults, ModelInfo

    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusion3Pipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "transformer": ["diffusers", "SD3Transformer2DModel"]}))
    registry = ModelRegistry(settings)
    registry.add(ModelInfo("my-flow", "image", "image-dit", "folder", str(tmp_path), "StableDiffusion3Pipeline",
                           ModelDefaults(steps=20, guidance_scale=4.5, width=64, height=64)))
    cases = [("shallow_start", {}, r"does not fit the scheduler FlowMatchEulerDiscreteScheduler"),
             ("density", {}, r"does not fit the transformer SD3Transformer2DModel"),
             ("solver", {"kind": "lcm"}, r"does not fit the flow-matching scheduler")]
    for name, options, needle in cases:
        with pytest.raises(InvalidRequest, match=needle):
            prepare_request(_request(model="my-flow", techniques=[{"name": name, "options": options}]),
                            registry, settings)


def test_a_job_whose_remove_fails_drops_the_pipeline(settings: Settings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``ModelCache.use`` drops a pipeline a technique could not be taken off; the job either fails
    as ``technique_remove_failed`` or, where the runner catches the error, records it as a warning."""
    from genaccel.accel.deepcache import DeepCacheHandle
    from pipelines.engine import LocalEngine

    real = DeepCacheHandle.remove

    def remove(self: DeepCacheHandle) -> None:
        real(self)
        raise TechniqueRemoveFailed(["deepcache"], "injected failure")

    monkeypatch.setattr(DeepCacheHandle, "remove", remove)
    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": "x", "steps": 2, "techniques": [{"name": "deepcache"}]}),
                            output_dir=tmp_path)
        (done,) = engine.wait([job.id])
        assert len(engine.runner.cache) == 0
    failed = done.error is not None and done.error.code == "technique_remove_failed"
    warned = any("removing technique deepcache failed" in w for w in done.metadata.get("warnings", []))
    assert failed or warned, (done.state, done.error, done.metadata.get("warnings"))
