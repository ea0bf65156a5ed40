"""The music reference model's trainer (genaccel/training/music_ref.py) with another codec than the
default: the model's input width follows the codec's mel bands, the exported folder carries the
codec, and the pipeline loaded from it makes mels of that height."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genaccel.training.music_ref import main
from pipelines.mel_dit import MelDiTPipeline


def test_a_finer_codec_trains_exports_and_generates(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    main(["--out", str(out), "--work", str(work), "--steps", "2", "--data", "12", "--save-every", "2",
          "--n-mels", "96", "--n-fft", "2048", "--fmin", "100"])
    codec = json.loads((out / "mel_codec.json").read_text())
    assert (codec["n_mels"], codec["n_fft"], codec["fmin"]) == (96, 2048, 100.0)
    assert json.loads((out / "train_log.json").read_text())["step"] == 2
    assert [p.name for p in work.glob("mels-*.pt")] == ["mels-12-1-96x2048-100.pt"]  # keyed by the codec
    pipe = MelDiTPipeline.from_pretrained(out).to(torch.float32)
    assert pipe.transformer.config.in_channels == 96 * 4  # four frames a token
    mels = pipe(prompt="a slow flute melody", num_inference_steps=2, audio_length_in_s=1.0, output_type="latent",
                generator=torch.Generator().manual_seed(0)).mels
    assert mels.shape[1] == 96


def test_training_sigmas_follow_p_mean_and_are_recorded(tmp_path: Path, monkeypatch) -> None:
    """``--p-mean``/``--p-std`` place the training noise levels (a high mean trains the steps where
    a sampler from sigma 80 lays the notes out) and the exported state says which were used."""
    import genaccel.training.music_ref as music_ref

    seen: list[torch.Tensor] = []
    real = music_ref.dit_output

    def spy(transformer, x, t, states, pooled):  # t = ln(sigma) / 4
        seen.append(torch.exp(4 * t.detach()))
        return real(transformer, x, t, states, pooled)

    monkeypatch.setattr(music_ref, "dit_output", spy)
    out, work = tmp_path / "out", tmp_path / "work"
    main(["--out", str(out), "--work", str(work), "--steps", "3", "--data", "12", "--save-every", "3",
          "--batch", "64", "--p-mean", "2.0", "--p-std", "0.1"])
    sigmas = torch.cat(seen)
    assert sigmas.min() > 4.0 and sigmas.max() < 12.0  # e^2 = 7.4, spread 0.1 in ln sigma
    state = json.loads((out / "train_state.json").read_text())
    assert (state["p_mean"], state["p_std"]) == (2.0, 0.1)
