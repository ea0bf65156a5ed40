"""Tests for the procedural shape dataset."""

import numpy as np
import pytest

from genaccel.refdata import (
    ATTRIBUTES,
    HELDOUT_COMBOS,
    ShapeSpec,
    draw_shape,
    make_dataset,
    natural_caption,
    parse_caption,
    parse_prompt,
    render,
    sample_free,
    sample_specs,
)


def test_make_dataset_deterministic_by_seed():
    a, sa = make_dataset(16, seed=3, split="all")
    b, sb = make_dataset(16, seed=3, split="all")
    c, _ = make_dataset(16, seed=4, split="all")
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
    assert sa == sb and np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_render_deterministic_and_rgb():
    spec = ShapeSpec("star", "red", "large", "center", "black")
    im1 = render(spec, np.random.default_rng(0))
    im2 = render(spec, np.random.default_rng(0))
    assert im1.size == (64, 64) and im1.mode == "RGB"
    assert np.array_equal(np.asarray(im1), np.asarray(im2))
    # centre pixel is the shape colour, corner is background
    arr = np.asarray(im1)
    assert tuple(arr[0, 0]) == (0, 0, 0)
    assert arr[32, 32, 0] > 200


def test_upright_shapes_keep_the_other_jitter_and_stand_upright():
    import math

    # circles ignore the angle, so the same seed gives the same circles with or without the tilt limit
    any_angle, specs = make_dataset(64, seed=5, split="all")
    upright, _ = make_dataset(64, seed=5, split="all", max_rotation=math.radians(10))
    circles = [i for i, s in enumerate(specs) if s.shape == "circle"]
    others = [i for i, s in enumerate(specs) if s.shape != "circle"]
    assert circles and others
    assert np.array_equal(any_angle[circles], upright[circles])
    assert not np.array_equal(any_angle[others], upright[others])
    # an upright large square on white has level sides: its top row of shape pixels is a long run
    spec = ShapeSpec("square", "blue", "large", "center", "white")
    arr = np.asarray(render(spec, np.random.default_rng(0), max_rotation=0.0))
    rows = np.nonzero((arr[..., 2] > 150) & (arr[..., 0] < 100))[0]
    top = np.nonzero((arr[rows.min() + 1, :, 2] > 150) & (arr[rows.min() + 1, :, 0] < 100))[0]
    assert len(top) > 15  # a diamond's top rows are a few pixels wide


def test_students_learn_on_the_data_their_teacher_was_trained_on(tmp_path):
    import json
    import math

    from genaccel.training.distill import trained_rotation

    class Pipe:
        name_or_path = str(tmp_path)

    assert trained_rotation(Pipe()) is None  # no train_log.json: any angle, as the old models were trained
    (tmp_path / "train_log.json").write_text(json.dumps({"max_rotation": 10}))
    assert trained_rotation(Pipe()) == math.radians(10)


def test_heldout_split_exclusion():
    assert len(HELDOUT_COMBOS) == 4
    train = {(s.shape, s.colour) for s in sample_specs(2000, seed=0, split="train")}
    held = {(s.shape, s.colour) for s in sample_specs(500, seed=0, split="heldout")}
    every = {(s.shape, s.colour) for s in sample_specs(3000, seed=0, split="all")}
    assert not train & HELDOUT_COMBOS
    assert len(train) == 20
    assert held == set(HELDOUT_COMBOS)
    assert len(every) == 24
    with pytest.raises(ValueError):
        sample_specs(1, seed=0, split="test")


def test_caption_parse_round_trip():
    for spec in sample_specs(300, seed=1, split="all"):
        assert parse_caption(spec.caption()) == spec.as_dict()
    spec = ShapeSpec("triangle", "red", "small", "top left", "grey")
    assert spec.caption() == "a small red triangle at the top left on a grey background"
    centre = ShapeSpec("circle", "blue", "large", "center", "white")
    assert "in the center" in centre.caption()


def test_parse_caption_partial_and_synonyms():
    assert parse_caption("a blue circle on a white background") == {
        "shape": "circle",
        "colour": "blue",
        "background": "white",
    }
    assert parse_caption("Big yellow STAR, bottom-right, gray backdrop") == {
        "shape": "star",
        "colour": "yellow",
        "size": "large",
        "position": "bottom right",
        "background": "grey",
    }
    assert parse_caption("something in the centre") == {"position": "center"}
    assert parse_caption("a photo of a dog") == {}


def test_spec_validation():
    with pytest.raises(ValueError):
        ShapeSpec("hexagon", "red", "small", "center", "grey")
    assert set(ShapeSpec("circle", "red", "small", "center", "grey").as_dict()) == set(
        ATTRIBUTES
    )


def test_full_caption_unchanged_and_natural_captions_deterministic():
    spec = ShapeSpec("triangle", "red", "small", "top left", "grey")
    assert spec.caption() == "a small red triangle at the top left on a grey background"
    a = [s.caption(np.random.default_rng(5)) for s in sample_specs(20, seed=2, split="all")]
    b = [s.caption(np.random.default_rng(5)) for s in sample_specs(20, seed=2, split="all")]
    assert a == b


def test_natural_captions_parse_back_to_the_attributes_they_keep():
    rng = np.random.default_rng(0)
    forms = set()
    partial = 0
    for spec in sample_specs(400, seed=1, split="all"):
        text = natural_caption(spec, rng)
        parsed = parse_prompt(text)
        assert parsed.ok, text
        assert parsed.attributes.items() <= spec.as_dict().items(), text  # only true attributes
        partial += len(parsed.attributes) < len(ATTRIBUTES)
        forms.add(text.split()[0])
    assert partial > 100 and len(forms) > 3  # attributes left out, several word orders


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a gray disc in the centre", {"shape": "circle", "background": "grey", "position": "center"}),
        ("in the middle, a big purple star", {"shape": "star", "colour": "magenta", "size": "large",
                                               "position": "center"}),
        ("black background with a tiny cyan square in the upper-right",
         {"shape": "square", "colour": "cyan", "size": "small", "position": "top right", "background": "black"}),
        ("a red shape", {"colour": "red"}),
    ],
)
def test_parse_prompt_synonyms_partials_and_word_orders(text, expected):
    parsed = parse_prompt(text)
    assert parsed.ok and parsed.attributes == expected


@pytest.mark.parametrize("text", ["an orange circle", "a red hexagon", "a red and blue square", "a photo of a dog"])
def test_parse_prompt_flags_what_cannot_be_scored(text):
    assert not parse_prompt(text).ok


def test_free_shapes_labels_and_shared_drawing_code():
    rng = np.random.default_rng(3)
    for _ in range(50):
        f = sample_free(rng)
        assert f.r + 1 <= f.cx <= 63 - f.r and f.r + 1 <= f.cy <= 63 - f.r
        assert np.asarray(f.draw()).shape == (64, 64, 3)
    # render() goes through draw_shape: a spec at its nominal centre matches a direct drawing
    spec = ShapeSpec("circle", "red", "large", "center", "white")
    direct = draw_shape("circle", (230, 25, 25), (255, 255, 255), 32.0, 32.0, 15.0)
    assert np.abs(np.asarray(direct).astype(int) - np.asarray(render(spec, np.random.default_rng(0)))).mean() < 20


def test_negative_generators_are_deterministic_and_distinct():
    from genaccel.refdata.negatives import HELDOUT_KINDS, TRAIN_KINDS, negatives

    assert not set(TRAIN_KINDS) & set(HELDOUT_KINDS)
    a, kinds = negatives(14, seed=1, generator="heldout")
    b, _ = negatives(14, seed=1, generator="heldout")
    assert a.shape == (14, 64, 64, 3) and np.array_equal(a, b) and set(kinds) == set(HELDOUT_KINDS)
    t, tk = negatives(12, seed=1, generator="train")
    assert set(tk) == set(TRAIN_KINDS) and np.all(t[tk.index("empty")] == t[tk.index("empty")][0, 0])
