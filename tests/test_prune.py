"""`genaccel prune`: LD-Pruner ranking of removable UNet units and DiT blocks, a smaller diffusers
denoiser holding the remaining weights, recovery by distillation, and a pruned model that loads by
name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genaccel.cli import main
from genaccel.errors import InvalidRequest
from genaccel.training.distill import DistillConfig, Distiller, block_outputs
from genaccel.training.prune import (
    chosen_plan,
    disabled,
    importance,
    plan,
    pruned_denoiser,
    pruned_unet,
    units,
)


def _batches(unet) -> list:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    dim = unet.config.cross_attention_dim
    cond = torch.randn(2, 77, dim, generator=gen)
    return [(torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([100, 700]), cond, None)]


def test_units_ranking_and_plan(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    unet = tiny_sd.unet
    names = [u.name for u in units(unet)]
    assert names == ["mid_block", "down_blocks.1.attentions", "up_blocks.0.attentions"]
    scores = importance(unet, _batches(unet))
    assert set(scores) == set(names) and all(v > 0 for v in scores.values())
    x, t, c, _ = _batches(unet)[0]
    with torch.no_grad():
        before = unet(x, t, c).sample
        with disabled(unet, "mid_block"):
            without = unet(x, t, c).sample
        after = unet(x, t, c).sample
    assert not torch.equal(before, without) and torch.equal(before, after)  # the hook is gone again
    total = sum(p.numel() for p in unet.parameters())
    chosen = plan(unet, scores, 0.05)
    assert chosen.removed == [min(scores, key=scores.__getitem__)][: len(chosen.removed)]
    assert chosen.params_after == total - sum(u.params for u in units(unet) if u.name in chosen.removed)
    assert chosen.ratio >= 0.05


def test_pruned_unet_keeps_the_remaining_weights(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    unet = tiny_sd.unet
    removed = ["mid_block", "up_blocks.0.attentions"]
    small = pruned_unet(unet, removed)
    assert small.mid_block is None and small.config.up_block_types[0] == "UpBlock2D"
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in unet.parameters())
    x, t, c, _ = _batches(unet)[0]
    with torch.no_grad(), disabled(unet, "mid_block"), disabled(unet, "up_blocks.0.attentions"):
        expected = unet(x, t, c).sample
    with torch.no_grad():
        got = small(x, t, c).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)  # pruning = running without the units


def test_recovery_loss_distils_outputs_guidance_and_shared_block_features(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    teacher = tiny_sd.unet
    student = pruned_unet(teacher, ["mid_block"])
    x, t, c, _ = _batches(teacher)[0]
    with torch.no_grad(), block_outputs(teacher) as feats:
        teacher(x, t, c)
    assert sorted(feats) == ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"]
    assert feats["down_blocks.0"].shape[0] == 2 and not teacher._forward_hooks  # hidden states; hooks gone
    with torch.no_grad(), block_outputs(student) as feats:
        student(x, t, c)
    assert "mid_block" not in feats
    distiller = Distiller(tiny_sd, DistillConfig(mode="kd", batch=2), student=student)
    cond = distiller._embed(["a red circle", "a blue square"])
    empty = distiller._embed([""])[0]
    loss = distiller.loss(torch.randn(2, 4, 8, 8), cond, (empty.expand_as(cond[0]), None),
                          torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None for p in distiller.student.down_blocks.parameters() if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen
    same = Distiller(tiny_sd, DistillConfig(mode="kd", batch=2), student=pruned_unet(teacher, []))
    zero = same.loss(torch.randn(2, 4, 8, 8), cond, (empty.expand_as(cond[0]), None), torch.Generator().manual_seed(0))
    noise_only = zero.item()  # a student equal to the teacher: only the small denoising term is left
    assert 0 < noise_only < loss.item()


def test_plan_refusals(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    scores = {u.name: 1.0 for u in units(tiny_sd.unet)}
    mine = chosen_plan(tiny_sd.unet, scores, ["up_blocks.0.attentions"])  # a user's choice, not the ranking's
    assert mine.removed == ["up_blocks.0.attentions"] and 0 < mine.ratio < 1
    for bad in (["mid_block", "mid_block"], ["down_blocks.9.attentions"], []):
        with pytest.raises(InvalidRequest, match="must name distinct removable units of this denoiser: mid_block"):
            chosen_plan(tiny_sd.unet, scores, bad)
    with pytest.raises(InvalidRequest, match="needs more than the removable units hold"):
        plan(tiny_sd.unet, scores, 0.9)
    with pytest.raises(InvalidRequest, match="must be between 0 and 1"):
        plan(tiny_sd.unet, scores, 0.0)


@pytest.mark.slow
def test_prune_command_saves_a_model_that_renders(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  isolated_home: Path) -> None:
    args = ["prune", "--model", "tiny-sd", "--ratio", "0.1", "--recover-steps", "2", "--batch", "2",
            "--calibration", "8", "--work", str(tmp_path / "work")]
    assert main(args) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    out = Path(captured.out.strip())
    assert out == isolated_home / "models" / "tiny-sd-pruned" and "removed" in captured.err
    card = json.loads((out / "genaccel.json").read_text())
    assert card["pruned_from"] == "tiny-sd" and card["prune"]["ratio"] >= 0.1 and card["recover_steps"] == 2
    assert (out / "loss_curve.png").is_file()
    assert main(["models"]) == 0 and "pruned from tiny-sd" in capsys.readouterr().out
    assert main(["render", "a red circle", "--model", "tiny-sd-pruned", "--json", "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "succeeded"


def test_prune_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--model", "tiny-sd", "--ratio", "1.5"]) == 2
    assert "ratio=1.5 is invalid: must be between 0 and 1" in capsys.readouterr().err
    assert main(["prune", "--model", "noop"]) == 2
    assert ("removes UNet blocks of SD-architecture models and transformer blocks of PixArt-style DiTs only"
            in capsys.readouterr().err)


def _dit_batch(transformer) -> tuple:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    size = transformer.config.sample_size
    cond = torch.randn(2, 6, transformer.config.caption_channels, generator=gen)
    return torch.randn(2, 4, size, size, generator=gen), torch.tensor([100, 700]), cond, torch.ones(2, 6)


def test_dit_blocks_are_units_and_pruning_equals_skipping_them(tiny_dit) -> None:  # type: ignore[no-untyped-def]
    model = tiny_dit.transformer
    names = [u.name for u in units(model)]
    assert names == [f"transformer_blocks.{i}" for i in range(model.config.num_layers)]
    batch = _dit_batch(model)
    scores = importance(model, [batch])
    assert set(scores) == set(names) and all(v > 0 for v in scores.values())
    small = pruned_denoiser(model, ["transformer_blocks.0"])
    assert small.config.num_layers == model.config.num_layers - 1 and len(small.transformer_blocks) == len(names) - 1
    from genaccel.training.prune import _call

    with torch.no_grad(), disabled(model, "transformer_blocks.0"):
        expected = _call(model, *batch)
    with torch.no_grad():
        got = _call(small, *batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)  # the kept blocks keep their weights, in order
    with pytest.raises(InvalidRequest, match="needs more than the removable units hold"):
        plan(model, scores, 0.99)


@pytest.mark.slow
def test_prune_command_prunes_a_dit_that_renders(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 isolated_home: Path) -> None:
    args = ["prune", "--model", "tiny-dit", "--remove", "transformer_blocks.1", "--recover-steps", "1", "--batch", "2",
            "--calibration", "8", "--work", str(tmp_path / "work")]
    assert main(args) == 0, capsys.readouterr().err
    out = Path(capsys.readouterr().out.strip())
    card = json.loads((out / "genaccel.json").read_text())
    assert card["prune"]["removed"] == ["transformer_blocks.1"] and card["defaults"]["steps"] == 20  # tiny-dit's
    assert json.loads((out / "transformer" / "config.json").read_text())["num_layers"] == 1
    assert main(["render", "a red circle", "--model", "tiny-dit-pruned", "--json", "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "succeeded"
