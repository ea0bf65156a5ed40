from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from genaccel.errors import InvalidRequest
from genaccel.settings import Limits
from genaccel.spec import JobRequest, validate_request

LIMITS = Limits()


def check(**flat: object) -> JobRequest:
    request = JobRequest.from_flat({"prompt": "a cat", **flat})
    validate_request(request, LIMITS)
    return request


def test_flat_aliases_map_to_fields() -> None:
    r = JobRequest.from_flat({"prompt": "p", "guidance": "7", "negative": "blur", "steps": "4", "seed": ""})
    assert r.params.guidance_scale == 7.0
    assert r.negative_prompt == "blur"
    assert r.params.steps == 4
    assert r.params.seed is None  # empty CSV cell = absent


def test_defaults_apply_where_line_is_silent() -> None:
    r = JobRequest.from_flat({"prompt": "p", "steps": 3}, defaults={"steps": 9, "model": "tiny-sd"})
    assert r.params.steps == 3 and r.model == "tiny-sd"


def test_flat_round_trip() -> None:
    r = check(steps=5, width=64, height=128, seed=3, negative="x")
    assert JobRequest.from_flat(r.flat()) == r


@pytest.mark.parametrize(
    ("flat", "pattern"),
    [
        ({"steps": -1}, r"steps=-1 is invalid: must be between 1 and 200; fix: pass --steps"),
        ({"steps": 201}, r"steps=201 .*between 1 and 200"),
        ({"width": 100}, r"width=100 is invalid: must be a multiple of 8; fix: pass --width 96"),
        ({"height": 32}, r"height=32 .*between 64 and 2048"),
        ({"guidance": 31}, r"guidance_scale=31.0 .*between 0 and 30"),
        ({"num_outputs": 9}, r"num_outputs=9 .*between 1 and 8"),
        ({"seed": 2**32}, r"seed=4294967296 .*between 0 and 4294967295"),
        ({"seed": -5}, r"seed=-5"),
        ({"priority": 10}, r"priority=10 .*between 0 and 9"),
        ({"frames": 16}, r"num_frames=16 is invalid: applies to modality video, not image; fix: drop num_frames"),
        ({"duration": 3}, r"duration_s=3.0 .*applies to modality speech or music"),
        ({"strength": 0.5}, r"strength=0.5 is invalid: only applies with an init image"),
        ({"modality": "smell"}, r"modality='smell' .*fix: use one of: image, video, speech, music"),
        ({"steps": "abc"}, r"steps='abc' is invalid: Input should be a valid integer"),
        ({"colour": "red"}, r"colour='red' is invalid: unknown field; fix: use one of:"),
        ({"modality": "video", "frames": 1000}, r"num_frames=1000 .*between 1 and 257"),
        ({"modality": "music", "duration": 0}, r"duration_s=0.0 is invalid: must be in \(0, 600\] seconds"),
    ],
)
def test_bad_values_name_field_value_limit_and_fix(flat: dict[str, object], pattern: str) -> None:
    with pytest.raises(InvalidRequest, match=pattern):
        check(**flat)


def test_prompt_limits() -> None:
    with pytest.raises(InvalidRequest, match=r"prompt='   ' is invalid: must have 1..2000 characters \(got 0\)"):
        check(prompt="   ")
    with pytest.raises(InvalidRequest, match=r"\(10000 chars\) is invalid: .*got 10000\); fix: shorten the prompt"):
        check(prompt="x" * 10_000)
    with pytest.raises(InvalidRequest, match=r"prompt=None is invalid: a prompt is required"):
        JobRequest.from_flat({"steps": 2})


def test_video_fields_validate_for_video() -> None:
    r = check(modality="video", frames=16, fps=8)
    assert r.params.num_frames == 16 and r.params.fps == 8


def test_init_image_checks(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"init_image=.* no such file"):
        check(init=str(tmp_path / "missing.png"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InvalidRequest, match=r"init_image=.* is not a readable image"):
        check(init=str(junk))
    good = tmp_path / "ok.png"
    Image.new("RGB", (64, 64), "red").save(good)
    with pytest.raises(InvalidRequest, match=r"strength=1.5 is invalid: must be in \(0, 1\]"):
        check(init=str(good), strength=1.5)
    assert check(init=str(good), strength=0.5).params.strength == 0.5


def test_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from genaccel.settings import Settings

    monkeypatch.setenv("GENACCEL_LIMITS__STEPS_MAX", "10")
    with pytest.raises(InvalidRequest, match="between 1 and 10"):
        validate_request(JobRequest.from_flat({"prompt": "p", "steps": 11}), Settings().limits)


def test_megapixel_limit() -> None:
    request = JobRequest.from_flat({"prompt": "p", "width": 1024, "height": 1024})
    with pytest.raises(InvalidRequest, match=r"width\*height='1024x1024' is invalid: must be at most 1.0 megapixels"):
        validate_request(request, Limits(max_megapixels=1.0))
