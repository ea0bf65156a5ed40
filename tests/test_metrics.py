"""Tests for the evaluator and quality metrics."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genaccel.metrics import Evaluator, frechet_distance, prompt_accuracy, psnr, ssim
from genaccel.refdata import ATTRIBUTES, make_dataset

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "evaluator"


@pytest.fixture(scope="module")
def images():
    x, specs = make_dataset(8, seed=11, split="all")
    return x, specs


def test_psnr_identical_is_inf_and_finite_otherwise(images):
    x, _ = images
    assert psnr(x, x) == math.inf
    assert psnr(x[0], x[0].astype(np.float64) / 255) == math.inf  # uint8 vs [0,1] float
    y = np.clip(x.astype(int) + 8, 0, 255).astype(np.uint8)
    val = psnr(x, y)
    assert math.isfinite(val) and 20 < val < 40


def test_ssim_identical_is_one_and_lower_for_noise(images):
    x, _ = images
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    noise = np.random.default_rng(0).integers(-40, 40, x.shape)
    y = np.clip(x.astype(int) + noise, 0, 255).astype(np.uint8)
    assert ssim(x, y) < 0.9
    with pytest.raises(ValueError):
        ssim(x, x[:, :32])


def test_frechet_distance():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 32))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # shifted mean by 1 in every dim -> ~D
    assert frechet_distance(f, f + 1.0) == pytest.approx(32.0, rel=1e-6)
    g = rng.normal(size=(400, 32)) * 2.0
    assert frechet_distance(f, g) > 10


def test_evaluator_save_load_round_trip(tmp_path, images):
    torch.manual_seed(0)
    model = Evaluator(channels=(4, 8), feature_dim=16).eval()
    model.save(tmp_path)
    loaded = Evaluator.load(tmp_path)
    x, _ = images
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        a, b = model(t), loaded(t)
    for k in ATTRIBUTES:
        assert torch.allclose(a[k], b[k], atol=2e-2)
    assert loaded.features(t).shape == (8, 16)
    # other input sizes are resized; PIL and uint8 inputs are accepted
    assert loaded.features(torch.rand(2, 3, 96, 96)).shape == (2, 16)
    from PIL import Image

    preds = loaded.predict([Image.fromarray(x[0]), Image.fromarray(x[1])])
    assert len(preds) == 2 and set(preds[0]) == set(ATTRIBUTES)
    assert len(loaded.predict(x)) == 8 and len(loaded.predict(x[0])) == 1


def test_prompt_accuracy_with_stub(images):
    x, specs = images

    class Oracle:
        def predict(self, imgs):
            return [s.as_dict() for s in specs]

    prompts = [s.caption() for s in specs]
    assert prompt_accuracy(Oracle(), x, prompts) == 1.0
    wrong = [
        "a green square" if s.shape != "square" else "a green circle" for s in specs
    ]
    # shape always wrong; colour right only where the spec is green
    expect = sum(s.colour == "green" for s in specs) / (2 * len(specs))
    assert prompt_accuracy(Oracle(), x, wrong) == pytest.approx(expect)
    assert math.isnan(prompt_accuracy(Oracle(), x, ["nothing"] * len(specs)))


@pytest.mark.skipif(
    not (ASSET_DIR / "model.safetensors").exists(), reason="no shipped evaluator"
)
def test_shipped_evaluator_accuracy():
    torch.set_num_threads(1)
    model = Evaluator.load(ASSET_DIR)
    x, specs = make_dataset(300, seed=2024, split="all")
    preds = model.predict(x)
    for attr in ATTRIBUTES:
        acc = np.mean([p[attr] == getattr(s, attr) for p, s in zip(preds, specs, strict=False)])
        assert acc >= 0.98, (attr, acc)
    held, hspecs = make_dataset(100, seed=7, split="heldout")
    prompts = [s.caption() for s in hspecs]
    assert prompt_accuracy(model, held, prompts) >= 0.98
