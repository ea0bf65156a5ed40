"""The reference-model training scripts, run with a tiny step budget, give loadable pipelines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_shapes_sd.py", "train_shapes_dit.py"])
def test_training_script_makes_a_loadable_resumable_pipeline(script: str, tmp_path: Path) -> None:
    out, work = tmp_path / "model", tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "scripts" / script), "--out", str(out), "--work", str(work),
           "--vae-steps", "2", "--steps", "2", "--data", "64", "--batch", "4"]
    cmd += ["--vae-gate", "0"]  # a VAE trained for 2 steps cannot pass the gate (next test)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model_index.json").is_file() and (out / "loss_curve.png").is_file()
    assert (out / "train_log.json").is_file()
    assert json.loads((out / "train_log.json").read_text())["steps_reached"] == 2
    assert not list(out.rglob("*.bin"))
    # resuming a finished run is a no-op that saves the same pipeline again
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    settings = Settings(home=tmp_path / "home")
    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": "a red circle", "model": str(out), "steps": 2}),
                            output_dir=tmp_path / "png")
        (result,) = engine.wait([job.id])
    assert result.state == "succeeded", result.error
    assert result.artifacts[0].width == 64


@pytest.mark.slow
def test_shapes_sd_reuses_a_trained_vae(tmp_path: Path) -> None:
    out, work = tmp_path / "model", tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_shapes_sd.py"), "--out", str(out), "--work", str(work),
           "--vae-from", str(ROOT / "assets" / "shapes-sd"), "--steps", "2", "--data", "64", "--batch", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (work / "vae.pt").exists() and (out / "vae" / "config.json").is_file()
    log = (out / "train_log.json").read_text()
    assert '"vae_from"' in log and '"unet_channels": [\n    64,\n    128,\n    128,\n    128\n  ]' in log


def test_vae_gate_refuses_a_vae_that_loses_attributes(tmp_path: Path) -> None:
    from genaccel.training.shapes_sd import ShapesSDConfig, build_components, check_vae

    untrained = build_components(ShapesSDConfig())["vae"].eval()
    with pytest.raises(RuntimeError, match=re.escape("VAE gate: reconstructions keep every attribute of 0.0% of the "
                                                     "images, under the 98% the denoiser stage needs")):
        check_vae(untrained, tmp_path, count=32)
    report = json.loads((tmp_path / "vae_report.json").read_text())
    assert report["exact_match"] == 0.0 and set(report) >= {"shape", "colour", "template_exact_match"}
    assert check_vae(untrained, tmp_path, gate=0.0)["exact_match"] == 0.0  # --vae-gate 0: go on anyway


def test_training_captions_are_deterministic_and_mix_natural_and_full_forms() -> None:
    import torch

    from genaccel.refdata.shapes import parse_caption, sample_specs
    from genaccel.training.latent_diffusion import CaptionSampler

    specs = sample_specs(64, 3)
    sampler = CaptionSampler(specs, natural=0.5, seed=1)
    idx = torch.arange(64)
    first, again, later = sampler(idx, 10), sampler(idx, 10), sampler(idx, 11)
    assert first == again and first != later
    full = [c for c, s in zip(first, specs, strict=True) if c == s.caption()]
    assert 16 < len(full) < 48  # about half in the fixed full form
    for caption, spec in zip(first, specs, strict=True):  # every caption names only what is true
        assert all(getattr(spec, attr) == value for attr, value in parse_caption(caption).items())
    assert all(c == s.caption() for c, s in zip(CaptionSampler(specs, natural=0.0)(idx, 5), specs, strict=True))


def test_every_caption_word_is_one_token_of_the_reference_tokenizers() -> None:
    import numpy as np

    from genaccel.refdata.shapes import caption_vocabulary, sample_specs
    from genaccel.training.shapes_dit import ShapesDiTConfig, build_dit_components
    from genaccel.training.shapes_sd import ShapesSDConfig, build_components

    clip = build_components(ShapesSDConfig())["tokenizer"]
    t5 = build_dit_components(ShapesDiTConfig())["tokenizer"]
    rng = np.random.default_rng(0)
    captions = [s.caption(rng) for s in sample_specs(200, 0)] + ["a huge pink disk, gray background"]
    for caption in captions:
        words = re.findall(r"[a-z]+", caption)
        assert set(words) <= set(caption_vocabulary())
        assert len(clip(caption).input_ids) <= clip.model_max_length
        assert len([t for t in clip.tokenize(caption) if t[:-4].isalpha()]) == len(words), clip.tokenize(caption)
    # T5's unigram pieces carry the word-start mark: a word after a hyphen ("top-right") is spelt out
    assert all(len(t5.tokenize(word)) == 1 for word in caption_vocabulary())


def test_shape_cells_get_the_asked_share_of_the_latent_loss() -> None:
    import torch

    from genaccel.training.latent_diffusion import share_weights

    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 2:4, 2:4] = 1  # a small shape: 4 of 256 cells
    mask[1, :, 4:12, 4:12] = 1  # a large one: 64 cells
    w = share_weights(mask, 1.0)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(2))
    assert torch.allclose((w * mask).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)), torch.full((2,), 0.5))


@pytest.mark.slow
def test_probe_scores_a_running_checkpoint_and_draws_its_outputs(tmp_path: Path) -> None:
    from genaccel.training.probe import load_checkpoint_pipeline, probe
    from genaccel.training.shapes_dit import train_shapes_dit

    work = tmp_path / "work"
    train_shapes_dit(tmp_path / "out", work, vae_steps=0, steps=2, batch=2, data=16,
                     vae_from=ROOT / "assets" / "shapes-sd", vae_gate=0)
    pipe, step = load_checkpoint_pipeline("dit", work)
    scores = probe(pipe, prompts=2, steps=1, sheet=tmp_path / "sheet.png")
    assert step == 2 and (tmp_path / "sheet.png").is_file()
    assert scores["scored_prompts"] == 2 and 0.0 <= scores["prompt_accuracy"] <= 1.0
