"""The ``turbo`` profile: the model's distilled student where one is served (its own sampler and
steps, no profile techniques), the training-free ``max`` recipe otherwise, said in the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.engine import LocalEngine
from pipelines.prepare import prepare_request, technique_configs
from pipelines.registry import ModelRegistry


@pytest.fixture
def with_student(isolated_home: Path, tmp_path: Path, tiny_sd) -> Settings:  # type: ignore[no-untyped-def]
    folder = tmp_path / "models" / "tiny-sd-lcm"
    tiny_sd.save_pretrained(folder, safe_serialization=True)
    (folder / "genaccel.json").write_text(json.dumps({"distilled_from": "tiny-sd", "mode": "lcm",
                                                      "defaults": {"steps": 2, "guidance_scale": 1.0}}))
    return Settings(home=isolated_home, default_model="tiny-sd", model_dirs=[tmp_path / "models"])


def test_turbo_swaps_in_the_student_with_its_own_steps(with_student: Settings) -> None:
    registry = ModelRegistry(with_student)
    request, info = prepare_request(JobRequest.from_flat({"prompt": "a cat", "profile": "turbo"}), registry,
                                    with_student)
    assert (request.model, request.swapped_from, info.name) == ("tiny-sd-lcm", "tiny-sd", "tiny-sd-lcm")
    assert (request.params.steps, request.params.guidance_scale) == (2, 1.0)
    assert technique_configs(request, info.family) == []  # the student runs as it is
    explicit, _ = prepare_request(JobRequest.from_flat({"prompt": "a cat", "profile": "turbo", "steps": 3}),
                                  registry, with_student)
    assert explicit.params.steps == 3  # an explicit value still wins
    with LocalEngine(with_student) as engine:
        job = engine.wait([engine.submit(JobRequest.from_flat({"prompt": "a cat", "profile": "turbo",
                                                               "seed": 1})).id])[0]
    assert job.state == "succeeded", job.error
    assert "ran tiny-sd-lcm, a distilled student of tiny-sd" in job.metadata["warnings"][0]


def test_turbo_without_a_student_falls_back_to_max_and_says_so(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    request, info = prepare_request(JobRequest.from_flat({"prompt": "a cat", "model": "tiny-dit",
                                                          "profile": "turbo"}), registry, settings)
    assert request.model == "tiny-dit" and request.swapped_from is None and request.params.steps == 8
    assert [c.name for c in technique_configs(request, info.family)] == ["solver", "taylorseer"]
    with LocalEngine(settings) as engine:
        job = engine.wait([engine.submit(request.model_copy(update={"params": request.params.model_copy(
            update={"steps": 2})}), prepared=True).id])[0]
    assert job.state == "succeeded", job.error
    assert any("has no distilled student here; ran the training-free max recipe" in w
               for w in job.metadata["warnings"])
