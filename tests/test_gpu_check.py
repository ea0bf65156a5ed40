"""The GPU check (``bench/gpu_check.py``) in its CPU dry mode: tiny sizes of the same real-size
architectures, every figure of the report present, the time budget honoured with the rows left
recorded as skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from genaccel.bench.real_size import ARCHS

ROOT = Path(__file__).resolve().parents[1]


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_reports_every_figure(tmp_path: Path) -> None:
    gpu_check = _module()
    result = gpu_check.check(tmp_path, dry=True, only=["sd15", "speech-decoder"], budget_s=0, say=lambda _: None)
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert saved["meta"]["dry"] is True and saved["meta"]["archs"]["sd15"]["published"] == "Stable Diffusion 1.5"
    steps = {r["arch"]: r for r in result["denoiser"]}
    assert set(steps) == {"sd15", "speech-decoder"}
    for row in steps.values():
        assert row["step_s"] > 0 and row["gflops_per_step"] > 0 and row["tflops_achieved"] > 0
        assert row["batch"] == 2 and row["batched_vs_alone_max_abs"] >= 0
    rows = {r["row"]: r for r in result["end_to_end"] if r["arch"] == "sd15"}
    assert set(rows) == {"off", "balanced", "turbo"}  # the speech decoder has no pipeline: no end-to-end row
    assert rows["off"]["speedup"] == 1.0 and rows["off"]["steps"] == 50
    assert rows["turbo"]["steps"] == 8 and rows["turbo"]["denoiser_calls"] == 8
    assert all("error" not in r and r["latency_s"] > 0 for r in rows.values())
    # a zero budget leaves every technique row, said by name, never dropped silently
    assert "sd15 deepcache" in result["skipped"]
    report = (tmp_path / "gpu-check.md").read_text()
    assert "| sd15 | turbo | 8 |" in report and "Skipped (time budget): " in report


def test_unknown_architecture_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _module().main([str(tmp_path), "--dry", "--only", "sd15,sd4"])
    assert "unknown architecture sd4; use some of " + ", ".join(ARCHS) in capsys.readouterr().err


def test_real_sizes_match_the_published_models() -> None:
    from accelerate import init_empty_weights

    with init_empty_weights():
        sizes = {name: sum(p.numel() for p in ARCHS[name].build(False).unet.parameters()) for name in ("sd15",)}
    assert 855e6 < sizes["sd15"] < 865e6  # SD 1.5's UNet: 859.5 M parameters
