"""Benchmark harness: matrix validation (before any work) and a small real run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genaccel.bench.matrix import load_matrix, parse_matrix
from genaccel.cli import main
from genaccel.errors import GenAccelError, InvalidRequest

ROW_KEYS = {"model", "profile", "techniques", "steps", "width", "height", "batch", "latency_s", "latency_s_min",
            "latency_s_max", "denoiser_evals", "speedup", "peak_rss_mb", "prompt_accuracy", "fd", "psnr", "ssim",
            "denoiser_s", "denoiser_speedup", "exact_match_trained", "exact_match_heldout", "exact_match_full",
            "exact_match_partial", "attribute_accuracy_micro", "attribute_accuracy", "attribute_accuracy_by_group",
            "shape_accuracy_evaluator", "shape_accuracy_template", "reader_agreement", "disagreements",
            "unparsable_prompts"}


def test_rows_and_baselines() -> None:
    m = parse_matrix({"models": ["a", "b"], "profiles": ["off", "fast"], "steps": [50, 4], "batch": [1, 2]})
    rows = m.rows()
    assert len(rows) == 16
    assert [r.baseline for r in rows[:4]] == [True, False, False, False]
    assert sum(r.baseline for r in rows) == 4  # one per (model, size, batch) group


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"models": []}, r"models=\[\] is invalid: List should have at least 1 item"),
        ({"models": ["a"], "sizes": ["64"]}, r"size '64' is not WIDTHxHEIGHT"),
        ({"models": ["a"], "steps": [0]}, r"steps 0 is outside 1..200"),
        ({"models": ["a"], "batch": [9]}, r"batch 9 is outside 1..8"),
        ({"models": ["a"], "repeats": 0}, r"repeats=0 is invalid"),
        ({"models": ["a"], "colour": 1}, r"colour=1 is invalid: Extra inputs are not permitted"),
    ],
)
def test_malformed_matrix_is_refused(data: dict[str, object], pattern: str) -> None:
    with pytest.raises(InvalidRequest, match=pattern):
        parse_matrix(data)


def test_matrix_files(tmp_path: Path) -> None:
    good = tmp_path / "m.yaml"
    good.write_text("models: [tiny-sd]\nsteps: [2, 1]\n")
    assert load_matrix(good).steps == [2, 1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [tiny-sd\n")
    with pytest.raises(GenAccelError, match="cannot be parsed"):
        load_matrix(bad)
    with pytest.raises(GenAccelError, match="does not exist"):
        load_matrix(tmp_path / "missing.json")


def test_unknown_model_or_profile_fails_before_running(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "--model", "tiny-sd", "--profiles", "off,warp", "--json", str(tmp_path / "x.json")]) == 2
    assert "profile='warp' is invalid: no such profile" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_two_row_bench_writes_json_markdown_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = main(["bench", "--model", "tiny-sd", "--steps", "2", "--steps", "1", "--repeats", "2", "--warmup", "0",
                 "--prompts", "8", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert len(rows) == 2 and all(set(r) >= ROW_KEYS for r in rows)
    base, fast = rows
    assert base["speedup"] == 1.0 and base["psnr"] is None
    assert base["denoiser_evals"] == 4 and fast["denoiser_evals"] == 2  # CFG doubles evaluations
    assert 0 <= fast["prompt_accuracy"] <= 1 and fast["psnr"] > 0 and 0 < fast["ssim"] <= 1
    assert base["latency_s_min"] <= base["latency_s"] <= base["latency_s_max"]
    assert 0 < base["denoiser_s"] < base["latency_s"] and base["denoiser_speedup"] == 1.0
    assert result["meta"]["fd_floor"] is not None
    assert "| tiny-sd | off |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| model | profile |" in captured.out


def test_quality_columns_and_unparsable_prompts_counted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    matrix = tmp_path / "q.json"
    matrix.write_text(json.dumps({"name": "q", "models": ["tiny-sd"], "steps": [1], "repeats": 1, "warmup": 0,
                                  "quality": {"prompts": 8, "extra_prompts": ["an orange hexagon", "a red star"]}}))
    out = tmp_path / "q-out.json"
    assert main(["bench", "--matrix", str(matrix), "--json", str(out)]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["meta"]["quality_prompts"] == 10
    assert row["unparsable_prompts"] == 1 and row["unparsable_examples"] == ["an orange hexagon"]
    assert row["scored_prompts"] == 9
    for key in ("prompt_accuracy", "exact_match_trained", "exact_match_heldout", "exact_match_full",
                "exact_match_partial", "attribute_accuracy_micro", "shape_accuracy_template"):
        assert 0 <= row[key] <= 1, key
    assert row["prompt_accuracy"] <= row["attribute_accuracy_micro"]  # exact match is the stricter figure
    assert set(row["attribute_accuracy_by_group"]) == {"trained", "heldout"}
    assert 0 <= row["reader_agreement"]["shape"] <= 1
    md = out.with_suffix(".md").read_text()
    assert "| exact match |" in md and "trained pairs | held-out pairs |" in md
    assert (tmp_path / "q-out-sheet.png").read_bytes()[:4] == b"\x89PNG" and "_samples" not in row


def test_technique_variants() -> None:
    m = parse_matrix({"models": ["tiny-sd"], "profiles": [
        "off", "deepcache", {"name": "dc2", "techniques": [{"name": "deepcache", "options": {"interval": 2}}]}]})
    rows = m.rows()
    assert [r.label for r in rows] == ["off", "deepcache", "dc2"]
    assert [r.profile for r in rows] == ["off", "off", "off"]
    assert rows[1].techniques[0].name == "deepcache" and rows[2].techniques[0].options == {"interval": 2}


def test_variant_on_another_model_compares_with_its_groups_baseline() -> None:
    m = parse_matrix({"models": ["shapes-sd"], "steps": [50], "profiles": [
        "off", {"name": "student", "model": "shapes-sd-lcm", "steps": 4}]})
    base, student = m.rows()
    assert (student.model, student.steps, student.baseline) == ("shapes-sd-lcm", 4, False)
    assert student.group == base.group == ("shapes-sd", None, None, 1)
    with pytest.raises(InvalidRequest, match="steps"):
        parse_matrix({"models": ["a"], "profiles": [{"name": "x", "steps": 0}]})
