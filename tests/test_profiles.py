"""Profiles resolve per denoiser family to techniques and their own step count; the solver
technique passes the three-run test; the job records what was applied and any warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques
from genaccel.accel.solver import SolverConfig
from genaccel.cli import main
from genaccel.errors import InvalidRequest
from genaccel.profiles import PROFILES, describe
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine
from pipelines.prepare import prepare_request, technique_configs
from pipelines.registry import ModelRegistry


def test_profiles_resolve_per_family_and_keep_their_steps(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    for model, family, expected in [("tiny-sd", "sd-unet", "deepcache"), ("tiny-dit", "image-dit", "taylorseer")]:
        request = JobRequest(prompt="a cat", model=model, profile="balanced")
        resolved, info = prepare_request(request, registry, settings)
        assert info.family == family
        assert resolved.params.steps == PROFILES["balanced"].recipe(family).steps == 15
        assert [c.name for c in technique_configs(resolved, family)] == ["solver", expected]
    explicit = JobRequest.from_flat({"prompt": "a cat", "model": "tiny-sd", "profile": "fast", "steps": 30})
    assert prepare_request(explicit, registry, settings)[0].params.steps == 30  # the user's steps win
    off = prepare_request(JobRequest(prompt="a cat", model="tiny-sd"), registry, settings)[0]
    assert off.params.steps == 20 and technique_configs(off, "sd-unet") == []  # tiny-sd's own default


def test_unknown_profile_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match=r"no such profile.*off, balanced, fast, max"):
        prepare_request(JobRequest(prompt="a cat", profile="warp"), ModelRegistry(settings), settings)


def test_solver_three_runs(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    def run() -> np.ndarray:
        return tiny_sd("a cat", num_inference_steps=8, height=64, width=64, output_type="np",
                       generator=torch.Generator().manual_seed(1)).images

    base = run()
    original = tiny_sd.scheduler
    techniques = apply_techniques(tiny_sd, [SolverConfig()])
    assert type(tiny_sd.scheduler).__name__ == "DPMSolverMultistepScheduler"
    fast = run()
    techniques.remove()
    assert tiny_sd.scheduler is original
    np.testing.assert_allclose(run(), base, atol=1e-4)
    assert 0 < np.abs(fast - base).mean() < 0.2  # same ODE, another solver: close, not equal


def test_job_records_profile_techniques_and_warnings(settings: Settings, tmp_path: Path) -> None:
    with LocalEngine(settings) as engine:
        jobs = [engine.submit(JobRequest.from_flat({"prompt": "a cat", "profile": p, "seed": 1}), output_dir=tmp_path)
                for p in ("balanced", "max", "off")]
        balanced, fastest, off = engine.wait([j.id for j in jobs])
    assert balanced.state == fastest.state == "succeeded"
    assert [t["name"] for t in balanced.metadata["techniques"]] == ["solver", "deepcache"]
    assert balanced.metadata["scheduler"] == "DPMSolverMultistepScheduler"
    assert off.metadata["scheduler"] == "DDIMScheduler"  # the model's own, restored after the other jobs
    assert balanced.progress.total == 15 and fastest.progress.total == 8
    assert any("saves little and costs quality" in w for w in fastest.metadata["warnings"])
    assert balanced.metadata["warnings"] == []


def test_profiles_command_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "balanced" in out and "sd-unet: solver(), deepcache(interval=2), 15 steps" in out
    summary = describe(PROFILES["fast"])
    assert summary["families"]["image-dit"]["steps"] == 8  # type: ignore[index]


@pytest.mark.parametrize("config", [SolverConfig(kind="tcd", gamma=0.5, spacing="trailing"),
                                    SolverConfig(kind="lcm", spacing="trailing")], ids=lambda c: c.kind)
def test_consistency_samplers_three_runs(tiny_sd, config: SolverConfig) -> None:  # type: ignore[no-untyped-def]
    def run() -> np.ndarray:
        return tiny_sd("a cat", num_inference_steps=4, height=64, width=64, output_type="np", guidance_scale=1.5,
                       generator=torch.Generator().manual_seed(1)).images

    base = run()
    techniques = apply_techniques(tiny_sd, [config])
    assert type(tiny_sd.scheduler).__name__ == {"tcd": "TCDScheduler", "lcm": "LCMScheduler"}[config.kind]
    assert tiny_sd.scheduler.config.timestep_spacing == "trailing"
    fast = run()
    techniques.remove()
    np.testing.assert_allclose(run(), base, atol=1e-4)
    assert np.abs(fast - base).max() > 1e-4


def test_consistency_sampler_with_full_guidance_is_warned(settings: Settings) -> None:
    from pipelines.prepare import technique_warnings

    request = JobRequest.from_flat({"prompt": "a cat", "guidance": 7.5, "steps": 4,
                                    "techniques": [{"name": "solver", "options": {"kind": "tcd"}}]})
    warnings = technique_warnings(request, technique_configs(request, "sd-unet"))
    assert "consistency-distilled" in warnings[0] and "--guidance 1.5" in warnings[0]
