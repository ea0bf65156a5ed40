"""The shipped reference models draw what the prompt asks for (as the evaluator reads it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genaccel.metrics.evaluator import Evaluator
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.mark.slow
@pytest.mark.parametrize(("model", "prompt"), [
    ("shapes-sd", "a blue circle on a white background"),  # the README's render command (default model)
    # shapes-dit follows full captions; with size and position left out it draws blue shapes of any kind
    ("shapes-dit", "a large blue circle in the center on a white background"),
])
@pytest.mark.xfail(strict=False, reason=(
    "issue 15: the evaluator that can say 'none' (session 5) reads the shipped models' renders honestly: "
    "shapes-sd draws blue discs on a cream background with a pink halo (read 'grey', 3 of 4 at seed 0), "
    "shapes-dit draws blobs (shape 'none', 4 of 4); retraining the models (issue 15, part 5) is the fix"))
def test_readme_prompt_gives_a_blue_circle(model: str, prompt: str, tmp_path: Path) -> None:
    if not (ASSETS / model / "model_index.json").is_file():
        pytest.skip(f"{model} is not shipped yet")
    settings = Settings(home=tmp_path / "home", default_model=model)
    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": prompt, "seed": 0,
                                                  "num_outputs": 4}), output_dir=tmp_path)
        (done,) = engine.wait([job.id])
    assert done.state == "succeeded", done.error
    assert done.request.params.steps == 50 and done.request.model == model
    from PIL import Image

    images = np.stack([np.asarray(Image.open(a.path).convert("RGB")) for a in done.artifacts])
    predictions = Evaluator.load(ASSETS / "evaluator").predict(images)
    hits = [p["shape"] == "circle" and p["colour"] == "blue" and p["background"] == "white" for p in predictions]
    assert sum(hits) >= 3, predictions


def test_default_model_is_shapes_sd_when_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.registry import ModelRegistry

    monkeypatch.delenv("GENACCEL_DEFAULT_MODEL")
    registry = ModelRegistry(Settings(home=tmp_path))
    expected = "shapes-sd" if (ASSETS / "shapes-sd" / "model_index.json").is_file() else "tiny-sd"
    assert registry.default_model("image") == expected
