"""Weight quantisation: three runs on both tiny families, exact removal, option checks, the fp8
fallback off capable GPUs, and the quantised layers' numerics and bytes."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import applied, apply_techniques, parse_technique
from genaccel.accel.quantize import QuantConv2d, QuantizeConfig, QuantLinear, targets, weight_bytes
from genaccel.errors import InvalidRequest, TechniqueAlreadyApplied
from genaccel.spec import TechniqueSpec
from tests.conftest import hooked

TOLERANCE = 0.05
"""Mean absolute difference (images in [0, 1]) allowed between quantised and float outputs of the
tiny models after two steps; they measured 0.002-0.01."""


def run(pipe: Any) -> np.ndarray:
    extra = {"use_resolution_binning": False, "clean_caption": False} if hasattr(pipe, "transformer") else {}
    with torch.no_grad():
        return pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(3), **extra).images


def denoiser(pipe: Any) -> torch.nn.Module:
    return getattr(pipe, "unet", None) or pipe.transformer


def snapshot(module: torch.nn.Module) -> dict[str, tuple[type, torch.nn.Module, torch.Tensor]]:
    return {name: (type(m), m, m.weight.detach().clone()) for name, m in module.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)}


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_dit"])
@pytest.mark.parametrize("config", [QuantizeConfig(), QuantizeConfig(mode="int8_dynamic"),
                                    QuantizeConfig(modules="linear+conv", stash="memory")],
                         ids=["int8_weight", "int8_dynamic", "linear+conv"])
def test_three_runs(request: pytest.FixtureRequest, fixture: str, config: QuantizeConfig) -> None:
    pipe = request.getfixturevalue(fixture)
    model = denoiser(pipe)
    before, bytes_before = snapshot(model), weight_bytes(model)
    base = run(pipe)
    techniques = apply_techniques(pipe, [config])
    try:
        swapped = [m for m in model.modules() if isinstance(m, QuantLinear | QuantConv2d)]
        assert swapped and all(type(m) is not torch.nn.Linear or m.weight.numel() < config.min_params
                               for m in model.modules())
        assert weight_bytes(model) < bytes_before
        on = run(pipe)
    finally:
        techniques.remove()
    assert 0 < np.abs(on - base).mean() < TOLERANCE
    np.testing.assert_array_equal(run(pipe), base)  # bit for bit
    assert applied(pipe) == [] and hooked(model) == []
    after = snapshot(model)
    assert after.keys() == before.keys() and weight_bytes(model) == bytes_before
    for name, (cls, module, weight) in before.items():
        assert after[name][0] is cls and after[name][1] is module, name
        assert torch.equal(after[name][2], weight), name


def test_quantised_denoiser_weights_shrink(tiny_dit: Any) -> None:
    model = tiny_dit.transformer
    full = weight_bytes(model)
    linear = sum(m.weight.numel() * 4 for m in model.modules()
                 if type(m) is torch.nn.Linear and m.weight.numel() >= 1024)
    techniques = apply_techniques(tiny_dit, [QuantizeConfig()])
    try:
        quantized = weight_bytes(model)
        scales = sum(m.scale.numel() * 4 for m in model.modules() if isinstance(m, QuantLinear))
    finally:
        techniques.remove()
    assert quantized == full - linear + linear // 4 + scales


def test_applying_twice_is_refused(tiny_sd: Any) -> None:
    techniques = apply_techniques(tiny_sd, [QuantizeConfig()])
    try:
        with pytest.raises(TechniqueAlreadyApplied, match=r"technique quantize is already applied"):
            apply_techniques(tiny_sd, [QuantizeConfig(mode="int8_dynamic")])
    finally:
        techniques.remove()
    assert applied(tiny_sd) == []


@pytest.mark.parametrize(("options", "needle"), [
    ({"mode": "int4"}, r"mode='int4' must be one of int8_weight, int8_dynamic, fp8"),
    ({"modules": "attention"}, r"modules='attention' must be linear or linear\+conv"),
    ({"min_params": -1}, r"min_params=-1 must be an integer >= 0"),
    ({"stash": "cloud"}, r"stash='cloud' must be one of auto, memory, disk"),
    ({"bits": 4}, r"unknown option"),
])
def test_bad_options_are_refused(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        parse_technique(TechniqueSpec(name="quantize", options=options))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback where fp8 cannot run")
def test_fp8_off_a_capable_gpu_warns_and_runs_int8(tiny_sd: Any, caplog: pytest.LogCaptureFixture) -> None:
    techniques = apply_techniques(tiny_sd, [QuantizeConfig()])
    try:
        int8 = run(tiny_sd)
    finally:
        techniques.remove()
    with caplog.at_level(logging.WARNING):
        techniques = apply_techniques(tiny_sd, [QuantizeConfig(mode="fp8")])
    try:
        assert all(m.qweight.dtype == torch.int8 for m in tiny_sd.unet.modules() if isinstance(m, QuantLinear))
        np.testing.assert_array_equal(run(tiny_sd), int8)
    finally:
        techniques.remove()
    assert caplog.text.count("quantize: fp8 needs a CUDA device of compute capability 8.9") == 1
    assert "quantising to int8_weight instead" in caplog.text


def test_min_params_skips_small_layers(tiny_sd: Any) -> None:
    sizes = [layer.weight.numel() for _, _, layer in targets(tiny_sd.unet, QuantizeConfig(min_params=4096))]
    assert sizes and min(sizes) >= 4096
    assert len(targets(tiny_sd.unet, QuantizeConfig(min_params=0))) > len(sizes)
    convs = targets(tiny_sd.unet, QuantizeConfig(modules="linear+conv"))
    assert len(convs) > len(targets(tiny_sd.unet, QuantizeConfig()))


@pytest.mark.parametrize("dynamic", [False, True], ids=["weight_only", "dynamic"])
def test_quant_linear_numerics_and_bytes(dynamic: bool) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 128)
    x = torch.randn(4, 10, 256)
    q = QuantLinear(layer, dynamic=dynamic)
    assert q.qweight.dtype == torch.int8 and q.qweight.shape == (128, 256)
    assert q.qweight.numel() * q.qweight.element_size() == layer.weight.numel() * layer.weight.element_size() // 4
    assert q.scale.shape == (128,) and q.scale.dtype == torch.float32
    ref, out = layer(x), q(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < (0.02 if dynamic else 0.01), rel  # weight-only measured ~0.003, dynamic ~0.006
    w = q.dequantized(torch.float32)
    assert ((w - layer.weight).abs() <= q.scale[:, None] / 2 + 1e-7).all()  # half a step per channel


def test_quant_conv_and_fp8_storage_numerics() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    x = torch.randn(2, 16, 8, 8)
    ref, out = conv(x), QuantConv2d(conv)(x)
    assert ((out - ref).norm() / ref.norm()).item() < 0.01
    layer = torch.nn.Linear(64, 64)
    fp8 = QuantLinear(layer, torch.float8_e4m3fn)
    y = torch.randn(3, 64)
    assert fp8.qweight.dtype == torch.float8_e4m3fn
    assert ((fp8(y) - layer(y)).norm() / layer(y).norm()).item() < 0.05  # 3 mantissa bits
