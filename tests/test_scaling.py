"""``bench/scaling.py``: the log-log fit recovers a known exponent, and a sweep measures every point."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("scaling", ROOT / "bench" / "scaling.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_recovers_the_exponent() -> None:
    scaling = _module()
    xs = [9, 17, 33, 65]
    got = scaling.fit(xs, [0.002 * x**1.7 for x in xs])
    assert got["exponent"] == pytest.approx(1.7) and got["factor"] == pytest.approx(0.002) and got["r2"] > 0.999


def test_frames_sweep_times_every_point(tmp_path: Path) -> None:
    scaling = _module()
    assert scaling.main(["--out", str(tmp_path), "--sweeps", "frames", "--tiny", "--repeats", "1"]) == 0
    md = (tmp_path / "scaling.md").read_text()
    assert "| frames | tiny Wan transformer step at 32 px | 5: " in md and (tmp_path / "scaling-frames.png").is_file()
    with pytest.raises(SystemExit):
        scaling.main(["--out", str(tmp_path), "--sweeps", "pixels"])
