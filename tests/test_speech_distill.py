"""``genaccel distill`` on speech-ref: the consistency student of the flow-matching mel decoder
(genaccel/training/speech_distill.py), its sampler, its card, and the ``turbo`` swap to it."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from genaccel.cli import main
from genaccel.refdata import speech as corpus
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from genaccel.training.speech_distill import SpeechDistillConfig, SpeechDistiller, speech_batches
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from pipelines.speech_ref import SpeechRefModel, build_tiny_speech_ref, rotary
from tests.test_distill import distilled

pytestmark = pytest.mark.skipif(not corpus.available(),
                                reason="libespeak-ng is not installed (apt-get install espeak-ng)")


def mel(model: SpeechRefModel, steps: int, seed: int = 0) -> torch.Tensor:
    mu, state = model.condition("red cat jumps seven", "us-male", 1.0)
    return model.sample_mel(mu, state, steps, torch.Generator().manual_seed(seed), lambda i, n: None)


def test_consistency_sampler_jumps_to_the_clean_mel_and_renoises() -> None:
    teacher = build_tiny_speech_ref(seed=3)
    student = SpeechRefModel(replace(teacher.cfg, sampler="consistency"), teacher.encoder, teacher.transformer)
    # one step: the consistency jump x + (1 - t) v from t = 0 is Euler's single step
    assert torch.equal(mel(student, 1), mel(teacher, 1))
    # two steps re-noise with fresh noise: seeded, so the same seed gives the same mel, another seed another
    assert torch.equal(mel(student, 2), mel(student, 2))
    assert not torch.equal(mel(student, 2), mel(student, 2, seed=1))
    assert not torch.equal(mel(student, 2), mel(teacher, 2))
    assert type(student.scheduler).__name__ == "ConsistencyFlowScheduler"
    with pytest.raises(ValueError, match="sampler='heun': must be euler or consistency"):
        SpeechRefModel(replace(teacher.cfg, sampler="heun"), teacher.encoder, teacher.transformer)


def test_student_starts_as_the_teacher_and_its_loss_falls() -> None:
    teacher = build_tiny_speech_ref(seed=0)
    distiller = SpeechDistiller(teacher, SpeechDistillConfig(batch=4, lr=3e-3, seed=0))
    for a, b in zip(distiller.student.parameters(), teacher.transformer.parameters(), strict=True):
        assert torch.equal(a, b) and a.requires_grad and not b.requires_grad
    batch = speech_batches(teacher, 4, seed=0, limit=8)(random.Random(0))
    with torch.no_grad():  # pulled away from its target, the student is pulled back
        for p in distiller.student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    before = distiller.loss(batch, torch.Generator().manual_seed(5)).item()
    opt = torch.optim.Adam(distiller.student.parameters(), lr=1e-3)
    for _ in range(15):
        loss = distiller.loss(batch, torch.Generator().manual_seed(5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = distiller.loss(batch, torch.Generator().manual_seed(5)).item()
    assert torch.isfinite(torch.tensor(before)) and after < before
    # the boundary condition holds by construction: at t = 1 the student returns its input
    x, mu, state = torch.randn(1, 64, 20), torch.zeros(1, 64, 20), torch.zeros(1, 1, teacher.cfg.dim)
    out = distiller._f(distiller.student, x, torch.ones(1), mu, state, rotary(teacher.cfg, 20))
    assert torch.equal(out, x)


@pytest.mark.slow
def test_distill_command_makes_a_speech_student_turbo_swaps_to(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              isolated_home: Path) -> None:
    out, card = distilled(capsys, "tiny-speech-ref", 6, tmp_path / "work")
    assert out == isolated_home / "models" / "tiny-speech-ref-consistency"
    assert (card["distilled_from"], card["mode"], card["defaults"]) == ("tiny-speech-ref", "consistency",
                                                                       {"steps": 2})
    assert json.loads((out / "config.json").read_text())["sampler"] == "consistency"
    args = ["distill", "--teacher", "tiny-speech-ref", "--steps", "3", "--batch", "2", "--data", "6",
            "--work", str(tmp_path / "work")]
    assert main(args) == 0  # resumes from step 2
    assert len(torch.load(tmp_path / "work" / "student.pt", weights_only=False)["losses"]) == 3
    capsys.readouterr()

    settings = Settings(home=isolated_home, default_model="tiny-sd")
    registry = ModelRegistry(settings)
    info = registry.resolve("tiny-speech-ref-consistency")
    assert (info.modality, info.pipeline_class, info.defaults.steps) == ("speech", "SpeechRefModel", 2)
    assert "consistency student of tiny-speech-ref" in info.description
    request = JobRequest.from_flat({"modality": "speech", "prompt": "red cat", "model": "tiny-speech-ref",
                                    "profile": "turbo"})
    prepared, _ = prepare_request(request, registry, settings)
    assert (prepared.model, prepared.swapped_from, prepared.params.steps) == (
        "tiny-speech-ref-consistency", "tiny-speech-ref", 2)

    code = main(["render", "red cat jumps seven", "--modality", "speech", "--model", "tiny-speech-ref",
                 "--profile", "turbo", "--json", "--out", str(tmp_path / "wav")])
    job = json.loads(capsys.readouterr().out)
    assert code == 0 and job["state"] == "succeeded", job
    assert job["metadata"]["scheduler"] == "ConsistencyFlowScheduler"
    assert list((tmp_path / "wav").glob("*.wav"))

    assert main(["distill", "--teacher", "tiny-speech-ref-consistency", "--steps", "1"]) == 2
    assert "teacher='tiny-speech-ref-consistency' is invalid: is already a consistency student" in (
        capsys.readouterr().err)


def test_speech_distill_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_home: Path) -> None:
    assert main(["distill", "--teacher", "tiny-speech-ref", "--mode", "lcm", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "mode='lcm' is invalid: tiny-speech-ref is a flow-matching speech model" in err
    assert "use --mode consistency" in err
    prompts = tmp_path / "p.txt"
    prompts.write_text("red cat\n")
    assert main(["distill", "--teacher", "tiny-speech-ref", "--prompts", str(prompts), "--steps", "1"]) == 2
    assert "distils on espeak-ng renderings of its training sentences, not on prompts" in capsys.readouterr().err


@pytest.mark.skipif(not (Path(__file__).parents[1] / "assets" / "speech-ref-consistency").is_dir(),
                    reason="the shipped student is not in assets/")
def test_shipped_student_is_served_and_turbo_on_speech_ref_swaps_to_it(settings: Settings) -> None:
    from genaccel.metrics.speech import SpeechEvaluator

    registry = ModelRegistry(settings)
    request = JobRequest.from_flat({"modality": "speech", "prompt": "red cat jumps seven", "model": "speech-ref",
                                    "profile": "turbo", "voice": "gb-female"})
    prepared, info = prepare_request(request, registry, settings)
    assert (prepared.model, prepared.swapped_from, prepared.params.steps) == ("speech-ref-consistency",
                                                                           "speech-ref", 1)
    model = info.builder()  # type: ignore[misc]
    wav = model.synthesize("red cat jumps seven", "gb-female", 1.0, 1, torch.Generator().manual_seed(0),
                           lambda i, n: None)
    assert SpeechEvaluator.load().read([wav], model.sample_rate)[0] == ("red", "cat", "jumps", "seven")
