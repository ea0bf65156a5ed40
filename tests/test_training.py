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
