"""The CLI as a user drives it: render, errors, batch with bad lines, jobs, models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genaccel.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_twice_gives_identical_pixels(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    paths = []
    for _ in range(2):
        code, out, _ = run(capsys, "render", "a cat", "--model", "tiny-sd", "--steps", "2", "--seed", "7",
                           "--out", str(tmp_path), "--no-cache")
        assert code == 0
        (line,) = out.splitlines()
        paths.append(Path(line))
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)  # two runs: --no-cache skips the result cache
    a, b = (np.asarray(Image.open(p)) for p in paths)
    assert np.array_equal(a, b)


def test_render_json_and_from_artifact(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "render", "a dog", "--model", "tiny-dit", "--steps", "2", "--seed", "3",
                       "--out", str(tmp_path), "--json")
    job = json.loads(out)
    assert code == 0 and job["state"] == "succeeded" and job["request"]["model"] == "tiny-dit"
    first = Path(job["artifacts"][0]["path"])
    code, out, _ = run(capsys, "render", "--from", str(first), "--out", str(tmp_path))
    assert code == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(out.strip())))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["a cat", "--steps", "-1"], "steps=-1 is invalid: must be between 1 and 200; fix: pass --steps"),
        (["a cat", "--width", "100"], "width=100 is invalid: must be a multiple of 8; fix: pass --width 96"),
        ([""], "prompt='' is invalid: must have 1..2000 characters"),
        (["x" * 10_000], "(10000 chars) is invalid: must have 1..2000 characters (got 10000); fix: shorten"),
        (["a cat", "--model", "nope"], "model='nope' is invalid: no such model; fix: use one of: "),
        (["a cat", "--modality", "smell"], "modality='smell' is invalid"),
        (["a cat", "--modality", "video", "--model", "tiny-sd"], "model='tiny-sd' is invalid: serves image, not video"),
        (["--steps", "2"], "prompt is missing; fix: pass a PROMPT argument or --from FILE (a genaccel artifact)"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    code, out, err = run(capsys, "render", *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("genaccel: error: ") and expected in err
    assert "Traceback" not in err


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batch_mixes_good_and_bad_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    batch = write_lines(tmp_path / "b.jsonl", [
        json.dumps({"prompt": "one", "seed": 1}),
        json.dumps({"prompt": "two", "steps": -3}),
        "{not json",
        json.dumps({"prompt": "four", "model": "tiny-dit", "seed": 4, "guidance": 3}),
        json.dumps(["a list"]),
        json.dumps({"prompt": "six", "colour": "red"}),
    ])
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "batch", str(batch), "--out", str(out_dir), "--steps", "2")
    assert code == 1
    assert "line 2: skipped: steps=-3 is invalid" in err
    assert "line 3: skipped: not valid JSON" in err
    assert "line 5: skipped: expected a JSON object, got list" in err
    assert "line 6: skipped: colour='red' is invalid: unknown field" in err
    records = [json.loads(x) for x in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["state"] for r in records] == ["succeeded", "invalid", "invalid", "succeeded", "invalid", "invalid"]
    assert all(Path(p).is_file() for r in records for p in r.get("artifacts", []))
    assert records[0]["seed"] == 1 and "run_s" in records[0]["timings"]
    assert "2 rendered, 0 already done, 4 failed of 6 lines" in err
    # the same folder again without --resume is refused rather than overwritten
    code, _, err = run(capsys, "batch", str(batch), "--out", str(out_dir))
    assert code == 2 and "pass --resume to continue" in err


def test_batch_csv_all_good_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    batch = tmp_path / "b.csv"
    batch.write_text("prompt,seed,steps,negative\na cat,1,2,\na dog,2,1,blurry\n")
    code, _, err = run(capsys, "batch", str(batch), "--out", str(tmp_path / "o"))
    assert code == 0, err
    records = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [2, 3] and {r["state"] for r in records} == {"succeeded"}


def test_batch_file_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "batch", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path))
    assert code == 2 and "does not exist" in err
    (tmp_path / "b.txt").write_text("x")
    code, _, err = run(capsys, "batch", str(tmp_path / "b.txt"), "--out", str(tmp_path))
    assert code == 2 and "the limit is .jsonl or .csv" in err


def test_jobs_list_show_cancel(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "render", "a cat", "--steps", "1", "--out", str(tmp_path), "--json")
    job_id = json.loads(out)["id"]
    code, out, _ = run(capsys, "jobs", "list", "--json")
    assert code == 0 and [j["id"] for j in json.loads(out)["jobs"]] == [job_id]
    code, out, _ = run(capsys, "jobs", "show", job_id)
    assert json.loads(out)["state"] == "succeeded"
    code, _, err = run(capsys, "jobs", "cancel", job_id)
    assert code == 1 and "already succeeded and cannot be cancelled" in err
    code, _, err = run(capsys, "jobs", "show", "missing")
    assert code == 1 and "job 'missing' does not exist" in err
    code, _, err = run(capsys, "jobs", "list", "--state", "done")
    assert code == 2 and "--state='done' is invalid" in err


def test_models_and_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and {m["name"] for m in json.loads(out)} >= {"tiny-sd", "tiny-dit"}
    code, out, _ = run(capsys, "profiles")
    assert code == 0 and out.startswith("off")


def _manifest(out_dir: Path) -> dict[int, dict]:  # type: ignore[type-arg]
    path = out_dir / "manifest.jsonl"
    if not path.is_file():
        return {}
    return {r["line"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_batch_killed_then_resumed_loses_nothing_and_renders_nothing_twice(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"shape {i}", "seed": i, "steps": 12}) for i in range(6)]
    batch = write_lines(tmp_path / "b.jsonl", lines)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "genaccel.cli", "batch", str(batch), "--out", str(out_dir)]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while sum(r["state"] == "succeeded" for r in _manifest(out_dir).values()) < 2:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {n: r for n, r in _manifest(out_dir).items() if r["state"] == "succeeded"}
    assert 2 <= len(before) < 6

    done = subprocess.run([*cmd, "--resume"], env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = _manifest(out_dir)
    assert sorted(after) == [1, 2, 3, 4, 5, 6]
    assert all(r["state"] == "succeeded" for r in after.values())
    for n, rec in before.items():
        assert after[n]["job_id"] == rec["job_id"]  # not rendered again
    assert f"{len(before)} already done" in done.stderr
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 6 and sorted(Path(p) for r in after.values() for p in r["artifacts"]) == pngs


def test_technique_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from genaccel.cli import parse_technique_option

    assert parse_technique_option("deepcache:interval=3,branch=1") == {
        "name": "deepcache", "options": {"interval": 3, "branch": 1}}
    code, _, err = run(capsys, "render", "a cat", "-t", "deepcache:interval")
    assert code == 2 and "'interval' is not key=value" in err
    code, _, err = run(capsys, "render", "a cat", "--model", "tiny-dit", "-t", "deepcache")
    assert code == 2 and "does not fit the image-dit denoiser family" in err
    code, out, _ = run(capsys, "render", "a cat", "--steps", "3", "-t", "deepcache:interval=2", "--json",
                       "--out", str(tmp_path))
    assert code == 0 and json.loads(out)["metadata"]["techniques"][0]["interval"] == 2
