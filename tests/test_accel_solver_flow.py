"""Few-step flow-matching schedules: the solver on a flow-matching scheduler (SD3, Flux, SANA)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from genaccel.accel import apply_techniques
from genaccel.accel.solver import SolverConfig, apply_solver
from genaccel.errors import InvalidRequest


def _flow_pipe(shift: float = 3.0) -> SimpleNamespace:
    return SimpleNamespace(scheduler=FlowMatchEulerDiscreteScheduler(shift=shift))


def _sample(scheduler, steps: int, x0: torch.Tensor, sigmas=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Integrate from pure noise with an oracle velocity (the exact flow towards ``x0``)."""
    if sigmas is not None:  # what Flux-style pipelines pass
        scheduler.set_timesteps(sigmas=sigmas, mu=None)
    else:
        scheduler.set_timesteps(steps)
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])
        velocity = (x - x0) / sigma
        x = scheduler.step(velocity, t, x).prev_sample
    return x


@pytest.mark.parametrize("kind", ["euler", "dpmsolver++", "unipc"])
def test_flow_schedules_three_runs(kind: str) -> None:
    pipe = _flow_pipe()
    original = pipe.scheduler
    x0 = torch.full((1, 4, 4, 4), 0.5)
    base = _sample(pipe.scheduler, 4, x0)
    handle = apply_solver(pipe, SolverConfig(kind=kind, spacing="trailing"))
    assert pipe.scheduler is not original
    fast = _sample(pipe.scheduler, 3, x0)
    assert torch.allclose(fast, x0, atol=1e-4)  # an exact velocity lands on the data in 3 steps
    flux_style = _sample(pipe.scheduler, 3, x0, sigmas=np.linspace(1.0, 1 / 3, 3).tolist())
    assert torch.allclose(flux_style, x0, atol=1e-4)
    handle.remove()
    assert pipe.scheduler is original
    assert torch.equal(_sample(pipe.scheduler, 4, x0), base)


def test_trailing_flow_sigmas_skip_the_tiny_last_step() -> None:
    pipe = _flow_pipe(shift=1.0)
    apply_solver(pipe, SolverConfig(kind="euler", spacing="trailing"))
    pipe.scheduler.set_timesteps(4)
    assert np.allclose(pipe.scheduler.sigmas.numpy(), [1.0, 0.75, 0.5, 0.25, 0.0])
    default = FlowMatchEulerDiscreteScheduler(shift=1.0)
    default.set_timesteps(4)
    assert float(default.sigmas[-2]) < 0.01  # the default spends its last step near sigma 0


def test_shift_override_and_its_refusal_elsewhere(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    pipe = _flow_pipe(shift=3.0)
    apply_solver(pipe, SolverConfig(kind="euler", shift=1.0))
    assert pipe.scheduler.config.shift == 1.0
    with pytest.raises(InvalidRequest, match="shift applies to flow-matching models only"):
        apply_solver(tiny_sd, SolverConfig(shift=2.0))


@pytest.mark.parametrize("kind", ["lcm", "tcd", "ddim"])
def test_noise_prediction_samplers_are_refused_on_flow_models(kind: str) -> None:
    pipe = _flow_pipe()
    original = pipe.scheduler
    with pytest.raises(InvalidRequest, match="does not fit the flow-matching scheduler") as err:
        apply_techniques(pipe, [SolverConfig(kind=kind)])
    assert "kind=euler with spacing=trailing" in str(err.value)
    assert pipe.scheduler is original
