"""shallow_start: a few-step draft, re-noised, then only the last part of the model's schedule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler

from genaccel.accel import apply_techniques
from genaccel.accel.shallow import ShallowStartConfig
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.image import generate_images
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry


def _request(settings: Settings, **params: object) -> JobRequest:
    flat = {"prompt": "a red circle", "model": "tiny-sd", "steps": 10, "seed": 5, **params}
    return prepare_request(JobRequest.from_flat(flat), ModelRegistry(settings), settings)[0]


def _count_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    return calls, module.register_forward_pre_hook(lambda m, a: calls.append(1))


def test_shallow_start_three_runs(settings: Settings, tiny_sd) -> None:  # type: ignore[no-untyped-def]
    request = _request(settings, num_outputs=2)
    steps: list[tuple[int, int]] = []

    def run(record: bool = False) -> np.ndarray:
        images = generate_images(tiny_sd, request, (lambda s, t: steps.append((s, t))) if record else lambda s, t: None)
        return np.stack([np.asarray(im, dtype=np.float32) for im in images])

    base = run()
    original = tiny_sd.scheduler
    calls, counting = _count_calls(tiny_sd.unet)
    techniques = apply_techniques(tiny_sd, [ShallowStartConfig(strength=0.4, prior_steps=2)])
    shallow = run(record=True)
    assert len(calls) == 2 + 4  # a 2-step draft, then the last 4 of 10 steps (CFG in one batched call)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # progress counts the refining steps
    assert tiny_sd.scheduler is original and "set_timesteps" not in vars(original)
    assert np.isfinite(shallow).all() and not np.array_equal(shallow, base)
    again = run()
    np.testing.assert_array_equal(again, shallow)  # deterministic by seed
    techniques.remove()
    counting.remove()  # only the counter this test added
    assert not hasattr(tiny_sd, "_genaccel_call_wrappers")
    np.testing.assert_allclose(run(), base, atol=1e-4)


def test_each_sample_keeps_its_own_draft(settings: Settings, tiny_sd) -> None:  # type: ignore[no-untyped-def]
    techniques = apply_techniques(tiny_sd, [ShallowStartConfig(strength=0.5, prior_steps=2)])
    try:
        pair = generate_images(tiny_sd, _request(settings, num_outputs=2, seed=7), lambda s, t: None)
        single = generate_images(tiny_sd, _request(settings, seed=8), lambda s, t: None)
    finally:
        techniques.remove()
    assert np.abs(np.asarray(pair[1], dtype=np.int16) - np.asarray(single[0], dtype=np.int16)).max() <= 1


def test_shallow_start_on_a_dit(settings: Settings, tiny_dit) -> None:  # type: ignore[no-untyped-def]
    request = _request(settings, model="tiny-dit", steps=6)
    techniques = apply_techniques(tiny_dit, [ShallowStartConfig(strength=0.5, prior_steps=2)])
    try:
        steps: list[tuple[int, int]] = []
        images = generate_images(tiny_dit, request, lambda s, t: steps.append((s, t)))
    finally:
        techniques.remove()
    assert len(images) == 1 and steps[-1] == (3, 3)


def test_bad_options_and_schedulers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"strength=1\.0 must be between 0 and 1"):
        ShallowStartConfig(strength=1.0)
    with pytest.raises(ValueError, match="prior_steps=1 must be between 2 and 8"):
        ShallowStartConfig(prior_steps=1)
    flow = SimpleNamespace(scheduler=FlowMatchEulerDiscreteScheduler())
    with pytest.raises(InvalidRequest, match=r"shallow_start.*FlowMatchEulerDiscreteScheduler") as err:
        apply_techniques(flow, [ShallowStartConfig()])
    assert "kind=euler with spacing=trailing" in str(err.value)
    heun = SimpleNamespace(scheduler=HeunDiscreteScheduler())
    with pytest.raises(InvalidRequest, match="order-2 scheduler"):
        apply_techniques(heun, [ShallowStartConfig()])
