"""`genaccel distill`: an LCM and a guidance student from the tiny teacher, loadable by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from genaccel.cli import main
from genaccel.errors import InvalidRequest
from genaccel.training.distill import DistillConfig, Distiller, guidance_embedding, make_student


def distilled(capsys: pytest.CaptureFixture[str], teacher: str, data: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """Run ``genaccel distill`` for 2 steps of batch 2; the student folder and its card."""
    args = ["distill", "--teacher", teacher, "--steps", "2", "--batch", "2", "--data", str(data),
            "--work", str(work)]
    assert main(args) == 0, capsys.readouterr().err
    out = Path(capsys.readouterr().out.strip())
    assert (out / "loss_curve.png").is_file() and (out / "train_log.json").is_file()
    return out, json.loads((out / "genaccel.json").read_text())


def test_student_starts_as_the_teacher(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    student = make_student(tiny_sd.unet)
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 16)
    with torch.no_grad():
        expected = tiny_sd.unet(x, t, cond).sample
        got = student(x, t, cond, timestep_cond=guidance_embedding(torch.tensor([7.5, 3.0]))).sample
    assert torch.allclose(expected, got, atol=1e-5)


@pytest.mark.parametrize("mode", ["lcm", "guidance"])
def test_loss_is_finite_and_trains(tiny_sd, mode: str) -> None:  # type: ignore[no-untyped-def]
    distiller = Distiller(tiny_sd, DistillConfig(mode=mode, batch=2))  # type: ignore[arg-type]
    cond = distiller._embed(["a red circle", "a blue square"])
    empty = distiller._embed([""])[0]
    loss = distiller.loss(torch.randn(2, 4, 8, 8), cond, (empty.expand_as(cond[0]), None),
                          torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert distiller.student.time_embedding.cond_proj.weight.grad is not None
    assert all(p.grad is None for p in tiny_sd.unet.parameters())  # the teacher stays frozen


@pytest.mark.slow
def test_distill_command_makes_a_model_that_renders(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     isolated_home: Path) -> None:
    out, card = distilled(capsys, "tiny-sd", 16, tmp_path / "work")
    assert out == isolated_home / "models" / "tiny-sd-lcm"
    assert card["defaults"]["steps"] == 4 and card["distilled_from"] == "tiny-sd"
    assert distilled(capsys, "tiny-sd", 16, tmp_path / "work")[0] == out  # resuming a finished run saves again
    code = main(["render", "a red circle", "--model", "tiny-sd-lcm", "--negative", "blue", "--json",
                 "--out", str(tmp_path / "png")])
    job = json.loads(capsys.readouterr().out)
    assert code == 0 and job["state"] == "succeeded"
    assert job["request"]["params"]["steps"] == 4 and job["metadata"]["scheduler"] == "LCMScheduler"
    assert "negative_prompt is ignored" in job["metadata"]["warnings"][0]


def test_distill_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["distill", "--teacher", "tiny-sd", "--mode", "magic"]) == 2
    assert "mode='magic' is invalid: no such distillation mode" in capsys.readouterr().err
    assert main(["distill", "--teacher", "tiny-dit", "--mode", "guidance", "--steps", "1", "--work",
                 str(tmp_path)]) == 2
    assert "has no guidance-scale input to distil into" in capsys.readouterr().err
    assert main(["distill", "--teacher", "noop", "--steps", "1", "--work", str(tmp_path)]) == 2
    assert "students of SD-UNet, PixArt and Latte pipelines" in capsys.readouterr().err
    assert main(["distill", "--teacher", "tiny-sd", "--prompts", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_guidance_distilled_teacher_is_refused(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    class Wrapped:
        unet = make_student(tiny_sd.unet)

    with pytest.raises(InvalidRequest, match="already guidance-distilled"):
        Distiller(Wrapped(), DistillConfig())


def test_dit_student_starts_as_the_teacher_and_trains(tiny_dit) -> None:  # type: ignore[no-untyped-def]
    distiller = Distiller(tiny_dit, DistillConfig(batch=2, guidance_default=4.5))
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    cond = distiller._embed(["a red circle", "a blue square"])
    with torch.no_grad():
        teacher = distiller.family.call(tiny_dit.transformer, x, t, *cond, None)
        student = distiller.family.call(distiller.student, x, t, *cond, None)
    assert torch.equal(teacher, student)
    empty = distiller._embed([""])
    loss = distiller.loss(x, cond, (empty[0].expand_as(cond[0]), empty[1].expand_as(cond[1])),
                          torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in tiny_dit.transformer.parameters())


@pytest.mark.slow
def test_dit_student_renders_without_cfg_and_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     isolated_home: Path) -> None:
    _, card = distilled(capsys, "tiny-dit", 16, tmp_path / "work")
    assert card["defaults"] == {"steps": 4, "guidance_scale": 1.0} and card["guidance_distilled"] == 4.5
    for guidance, expected in [(None, "guidance is distilled into this model"), ("3", "applies classifier-free")]:
        extra = ["--guidance", guidance] if guidance else []
        code = main(["render", "a red circle", "--model", "tiny-dit-lcm", "--json", *extra,
                     "--out", str(tmp_path / "png")])
        job = json.loads(capsys.readouterr().out)
        assert code == 0 and job["metadata"]["scheduler"] == "LCMScheduler"
        assert expected in job["metadata"]["warnings"][0]


def test_video_student_starts_as_the_teacher_and_trains_on_video_latents() -> None:
    from pipelines.tiny_video import build_tiny_latte

    teacher = build_tiny_latte()
    distiller = Distiller(teacher, DistillConfig(batch=2, guidance_default=4.5))
    latents, captions = distiller.family.reference_data(2, seed=0)
    assert latents.shape == (2, 4, teacher.transformer.config.video_length, 8, 8) and "moving" in captions[0]
    x, t = torch.randn(latents.shape), torch.tensor([10, 500])
    cond = distiller._embed(captions)
    with torch.no_grad():
        same = distiller.family.call(teacher.transformer, x, t, *cond, None)
        assert torch.equal(same, distiller.family.call(distiller.student, x, t, *cond, None))
    empty = distiller._embed([""])
    loss = distiller.loss(latents, cond, (empty[0].expand_as(cond[0]), empty[1].expand_as(cond[1])),
                          torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in teacher.transformer.parameters())


@pytest.mark.slow
def test_video_student_renders_a_clip_in_four_steps(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   isolated_home: Path) -> None:
    out, card = distilled(capsys, "tiny-latte", 4, tmp_path / "work")
    assert out == isolated_home / "models" / "tiny-latte-lcm"
    assert card["defaults"] == {"steps": 4, "guidance_scale": 1.0} and card["distilled_from"] == "tiny-latte"
    code = main(["render", "a red circle moving from left to right", "--modality", "video", "--model",
                 "tiny-latte", "--profile", "turbo", "--json", "--out", str(tmp_path / "clip")])
    job = json.loads(capsys.readouterr().out)
    assert code == 0 and job["state"] == "succeeded", job
    assert job["request"]["model"] == "tiny-latte-lcm" and job["request"]["params"]["steps"] == 4
    assert job["metadata"]["scheduler"] == "LCMScheduler"
    assert list((tmp_path / "clip").glob("*.mp4"))
