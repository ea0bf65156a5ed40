"""``genaccel distill`` on a mel-DiT music model (music-ref's architecture, tiny and random): the
consistency student (genaccel/training/music_distill.py), its sampler, its card, and the ``turbo``
swap to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genaccel.cli import main
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from genaccel.training.music_distill import MusicDistillConfig, MusicDistiller, karras_sigmas
from pipelines.mel_codec import MelCodecConfig
from pipelines.mel_dit import MelDiTConfig, MelDiTPipeline, build_mel_dit
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from tests.test_distill import distilled


def tiny_mel_dit(folder: Path) -> MelDiTPipeline:
    from genaccel.refdata.music import caption_words

    codec = MelCodecConfig(mean=-7.5, std=4.7, griffin_lim_iters=2)
    build_mel_dit(MelDiTConfig(layers=2, heads=2, kv_heads=1, head_dim=16, text_dim=32, text_layers=1),
                  caption_words(), seed=3, codec=codec).save_pretrained(folder)
    return MelDiTPipeline.from_pretrained(folder)


def test_student_starts_near_the_teacher_and_its_loss_falls(tmp_path: Path) -> None:
    teacher = tiny_mel_dit(tmp_path / "teacher")
    distiller = MusicDistiller(teacher, MusicDistillConfig(batch=2, grid=8, seed=0))
    for a, b in zip(distiller.student.parameters(), teacher.transformer.parameters(), strict=True):
        assert torch.equal(a, b) and a.requires_grad and not b.requires_grad
    sigmas = karras_sigmas(8)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-1] == pytest.approx(0.002) and (sigmas.diff() < 0).all()
    mels = torch.randn(2, 64 * teacher.patch, 6) * 0.5
    tokens = teacher.tokens(["a slow flute melody", "an arch clarinet melody in A minor"])
    # the boundary condition holds by construction: at sigma_min the student returns its input
    states = teacher.encode_prompt(["a flute melody"])
    x = torch.randn(1, 64 * teacher.patch, 6)
    torch.testing.assert_close(distiller.consistency(distiller.student, x, sigmas[-1:], *states), x)
    with torch.no_grad():  # pulled away from its target, the student is pulled back
        for p in distiller.student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    before = distiller.loss(mels, tokens, torch.Generator().manual_seed(5)).item()
    opt = torch.optim.Adam(distiller.student.parameters(), lr=1e-3)
    for _ in range(15):
        loss = distiller.loss(mels, tokens, torch.Generator().manual_seed(5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = distiller.loss(mels, tokens, torch.Generator().manual_seed(5)).item()
    assert torch.isfinite(torch.tensor(before)) and after < before


def test_distill_command_makes_a_music_student_turbo_swaps_to(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              isolated_home: Path) -> None:
    tiny_mel_dit(isolated_home / "models" / "tiny-mel")
    out, card = distilled(capsys, "tiny-mel", 4, tmp_path / "work")
    assert out == isolated_home / "models" / "tiny-mel-consistency"
    assert (card["distilled_from"], card["mode"], card["defaults"]) == ("tiny-mel", "consistency",
                                                                       {"steps": 4, "guidance_scale": 1.0})
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "CMStochasticIterativeScheduler" and scheduler["clip_denoised"] is False
    assert json.loads((out / "mel_codec.json").read_text())["griffin_lim_iters"] == 16

    settings = Settings(home=isolated_home, default_model="tiny-sd")
    registry = ModelRegistry(settings)
    info = registry.resolve("tiny-mel-consistency")
    assert (info.modality, info.pipeline_class, info.defaults.steps, info.defaults.guidance_scale) == (
        "music", "MelDiTPipeline", 4, 1.0)
    assert "consistency student of tiny-mel" in info.description
    request = JobRequest.from_flat({"modality": "music", "prompt": "a slow flute melody", "model": "tiny-mel",
                                    "profile": "turbo"})
    prepared, _ = prepare_request(request, registry, settings)
    assert (prepared.model, prepared.swapped_from, prepared.params.steps) == ("tiny-mel-consistency", "tiny-mel", 4)

    student = info.builder()  # type: ignore[misc]
    runs = [student("a flute", audio_length_in_s=1.0, num_inference_steps=2, output_type="latent",
                    generator=torch.Generator().manual_seed(s)).mels for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])  # its re-noising is seeded

    code = main(["render", "a slow flute melody", "--modality", "music", "--model", "tiny-mel", "--profile", "turbo",
                 "--duration", "1", "--json", "--out", str(tmp_path / "wav")])
    job = json.loads(capsys.readouterr().out)
    assert code == 0 and job["state"] == "succeeded", job
    assert job["metadata"]["scheduler"] == "CMStochasticIterativeScheduler"
    assert list((tmp_path / "wav").glob("*.wav"))

    assert main(["distill", "--teacher", "tiny-mel-consistency", "--steps", "1"]) == 2
    assert "teacher='tiny-mel-consistency' is invalid: is already a consistency student" in capsys.readouterr().err
    assert main(["distill", "--teacher", "tiny-mel", "--mode", "lcm", "--steps", "1"]) == 2
    assert "mode='lcm' is invalid: tiny-mel is an EDM music model whose student is a consistency model" in (
        capsys.readouterr().err)

