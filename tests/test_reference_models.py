"""The shipped reference models draw what the prompt asks for (as the evaluator reads it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genaccel.metrics.evaluator import Evaluator
from genaccel.refdata.shapes import parse_caption
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine
from ui.generate import EXAMPLE_PROMPTS

ASSETS = Path(__file__).resolve().parents[1] / "assets"


README_PROMPT = "a blue circle on a white background"  # scripts/demo.sh and the README's render command


@pytest.mark.slow
@pytest.mark.parametrize("model", ["shapes-sd", "shapes-dit"])
@pytest.mark.parametrize("prompt", [README_PROMPT, EXAMPLE_PROMPTS["image"]], ids=["readme", "ui-example"])
def test_demo_and_example_prompts_give_what_they_name(model: str, prompt: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    """At the model's defaults, at least 3 of 4 outputs have every attribute the prompt names, as
    the evaluator (which can say "none") reads the rendered files."""
    if model == "shapes-dit":
        request.applymarker(pytest.mark.xfail(strict=False, reason=(
            "issue 15: shapes-dit (upright retrain, exact match 0.55 on 200 prompts, shape 'none' for 43 % of its "
            "outputs) leaves some canvases empty or draws two shapes for these short prompts (1 of 4 red circles on "
            "black at seed 0); the README's demo and the UI's default model are shapes-sd, which passes")))
    if not (ASSETS / model / "model_index.json").is_file():
        pytest.skip(f"{model} is not shipped yet")
    named = parse_caption(prompt)
    assert {"shape", "colour", "background"} <= set(named)
    settings = Settings(home=tmp_path / "home", default_model=model)
    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": prompt, "seed": 0, "num_outputs": 4}),
                            output_dir=tmp_path)
        (done,) = engine.wait([job.id])
    assert done.state == "succeeded", done.error
    assert done.request.params.steps == 50 and done.request.model == model
    from PIL import Image

    images = np.stack([np.asarray(Image.open(a.path).convert("RGB")) for a in done.artifacts])
    predictions = Evaluator.load(ASSETS / "evaluator").predict(images)
    hits = [all(p[attr] == value for attr, value in named.items()) for p in predictions]
    assert sum(hits) >= 3, predictions


def test_default_model_is_shapes_sd_when_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.registry import ModelRegistry

    monkeypatch.delenv("GENACCEL_DEFAULT_MODEL")
    registry = ModelRegistry(Settings(home=tmp_path))
    expected = "shapes-sd" if (ASSETS / "shapes-sd" / "model_index.json").is_file() else "tiny-sd"
    assert registry.default_model("image") == expected
