"""General levers: three runs each, and a logged warning (no change) where one is unavailable."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques, parse_technique
from genaccel.accel.levers import AttentionBackend, ChannelsLast, RegionalCompile, VAETiling
from genaccel.errors import InvalidRequest
from genaccel.spec import TechniqueSpec


def run(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipe("a cat", num_inference_steps=3, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(2)).images


@pytest.mark.parametrize("config", [ChannelsLast(), VAETiling(), AttentionBackend("native"),
                                    RegionalCompile(backend="aot_eager")], ids=lambda c: c.name)
def test_three_runs(tiny_sd, config) -> None:  # type: ignore[no-untyped-def]
    base = run(tiny_sd)
    techniques = apply_techniques(tiny_sd, [config])
    on = run(tiny_sd)
    techniques.remove()
    if isinstance(config, VAETiling):  # tiles blend at their seams: close, not equal, above the tile size
        assert np.abs(on - base).mean() < 0.05
    else:
        np.testing.assert_allclose(on, base, atol=1e-3)  # no model maths changed
    np.testing.assert_allclose(run(tiny_sd), base, atol=1e-4)
    assert tiny_sd.unet.conv_in.weight.is_contiguous()
    assert not tiny_sd.vae.use_tiling
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in tiny_sd.unet.modules())


@pytest.mark.slow
def test_regional_compile_with_inductor(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    base = run(tiny_sd)
    techniques = apply_techniques(tiny_sd, [RegionalCompile()])
    compiled = [type(m).__name__ for m in tiny_sd.unet.modules() if getattr(m, "_compiled_call_impl", None)]
    assert set(compiled) == {"BasicTransformerBlock"}  # what UNet2DConditionModel._repeated_blocks names
    try:
        np.testing.assert_allclose(run(tiny_sd), base, atol=1e-3)
    finally:
        techniques.remove()
    np.testing.assert_allclose(run(tiny_sd), base, atol=1e-4)


def test_compile_options_are_checked() -> None:
    with pytest.raises(InvalidRequest, match="backend='magic' must be one of"):
        parse_technique(TechniqueSpec(name="compile", options={"backend": "magic"}))
    with pytest.raises(InvalidRequest, match="mode='fastest' must be default"):
        parse_technique(TechniqueSpec(name="compile", options={"mode": "fastest"}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_cuda_only_backend_warns_and_changes_nothing(tiny_sd, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    base = run(tiny_sd)
    with caplog.at_level(logging.WARNING):
        techniques = apply_techniques(tiny_sd, [AttentionBackend("xformers")])
    assert "attention backend xformers needs CUDA; keeping the default" in caplog.text
    np.testing.assert_array_equal(run(tiny_sd), base)
    techniques.remove()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="must be one of"):
        parse_technique(TechniqueSpec(name="attention", options={"backend": "magic"}))
