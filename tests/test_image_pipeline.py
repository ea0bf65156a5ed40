"""Dummy-component tests of the image adapter (tiny seeded models, few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genaccel.errors import InvalidRequest, JobCancelled
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.image import generate_images, supports_img2img
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry


def resolved(settings: Settings, **flat: object) -> JobRequest:
    request = JobRequest.from_flat({"prompt": "a red circle", **flat})
    return prepare_request(request, ModelRegistry(settings), settings)[0]


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_prepare_fills_every_default(settings: Settings) -> None:
    r = resolved(settings)
    assert r.model == "tiny-sd" and r.profile == "off"
    p = r.params
    assert (p.steps, p.guidance_scale, p.width, p.height) == (20, 7.5, 64, 64)
    assert p.seed is not None and 0 <= p.seed < 2**32


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_dit"])
def test_size_count_and_determinism(settings: Settings, fixture: str, request: pytest.FixtureRequest) -> None:
    pipe = request.getfixturevalue(fixture)
    model = fixture.replace("_", "-")
    r = resolved(settings, model=model, steps=2, seed=11, width=64, height=96, num_outputs=2)
    steps: list[tuple[int, int]] = []
    first = generate_images(pipe, r, lambda s, t: steps.append((s, t)))
    again = generate_images(pipe, r, lambda s, t: None)
    assert [im.size for im in first] == [(64, 96), (64, 96)]
    assert steps == [(1, 2), (2, 2)]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(arr(a), arr(b))
    assert not np.array_equal(arr(first[0]), arr(first[1]))


def test_each_output_depends_on_its_own_seed_only(settings: Settings, tiny_sd) -> None:  # type: ignore[no-untyped-def]
    pair = generate_images(tiny_sd, resolved(settings, steps=2, seed=100, num_outputs=2), lambda s, t: None)
    single = generate_images(tiny_sd, resolved(settings, steps=2, seed=101), lambda s, t: None)
    assert np.abs(arr(pair[1]) - arr(single[0])).max() <= 1


def test_step_callback_can_stop_the_pipeline(settings: Settings, tiny_sd) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def stop_at_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise JobCancelled("stop")

    with pytest.raises(JobCancelled):
        generate_images(tiny_sd, resolved(settings, steps=10, seed=1), stop_at_two)
    assert seen == [1, 2]


def test_img2img(settings: Settings, tiny_sd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 20, 20)).save(init)
    r = resolved(settings, steps=4, seed=3, init=str(init), strength=0.5)
    steps: list[tuple[int, int]] = []
    (img,) = generate_images(tiny_sd, r, lambda s, t: steps.append((s, t)))
    assert img.size == (64, 64)
    assert steps[-1] == (2, 2)  # strength 0.5 of 4 steps
    assert type(tiny_sd).__name__ == "StableDiffusionPipeline"  # the cached pipeline is untouched


@pytest.mark.parametrize(("steps", "strength", "fix"), [
    (1, 0.5, "raise steps to at least 2, or strength to at least 1"),
    (3, 0.3, "raise steps to at least 4, or strength to at least 0.333333"),
])
def test_img2img_that_would_denoise_no_step_is_refused(settings: Settings, tmp_path: Path, steps: int,
                                                      strength: float, fix: str) -> None:
    """Before the fix it was queued and crashed in the VAE ("cannot reshape tensor of 0 elements")."""
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    with pytest.raises(InvalidRequest) as err:
        resolved(settings, steps=steps, init=str(init), strength=strength)
    assert err.value.field == "strength" and f"with steps={steps}, strength={strength:g} denoises " \
        f"int({steps} x {strength:g}) = 0 steps" in err.value.message and f"fix: {fix}" in err.value.message
    assert resolved(settings, steps=steps + 1, init=str(init), strength=strength).params.strength == strength


def test_img2img_refused_for_models_without_it(settings: Settings, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    assert supports_img2img("StableDiffusionPipeline") and not supports_img2img("PixArtAlphaPipeline")
    with pytest.raises(InvalidRequest, match=r"init_image=.*tiny-dit \(PixArtAlphaPipeline\) has no image-to-image"):
        resolved(settings, model="tiny-dit", init=str(init))


def test_modality_and_profile_errors(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match=r"model='tiny-sd' is invalid: serves image, not video"):
        resolved(settings, modality="video", model="tiny-sd")
    with pytest.raises(InvalidRequest, match=r"model='tiny-sd' is invalid: serves image, not music"):
        resolved(settings, modality="music", model="tiny-sd")
    with pytest.raises(InvalidRequest, match=r"profile='warp' is invalid: no such profile; fix: use one of: off"):
        resolved(settings, profile="warp")
    with pytest.raises(InvalidRequest, match=r"warp. is invalid: no such technique; fix: use one of: .*deepcache"):
        resolved(settings, techniques=[{"name": "warp"}])


def test_one_step_on_pixart_needs_a_consistency_scheduler(settings: Settings) -> None:
    """PixArt's one-step path reads ``scheduler.step(...)[1]``, which DPM-Solver does not return:
    it crashed with IndexError inside the pipeline; now refused before queueing."""
    with pytest.raises(InvalidRequest) as err:
        resolved(settings, model="tiny-dit", steps=1)
    assert err.value.field == "steps" and "tiny-dit (PixArtAlphaPipeline with DPMSolverMultistepScheduler) cannot " \
        "sample in one step" in err.value.message and "fix: pass --steps 2 or more" in err.value.message
    assert resolved(settings, model="tiny-dit", steps=2).params.steps == 2
    assert resolved(settings, model="tiny-sd", steps=1).params.steps == 1  # UNet pipelines have no such path
