"""Tests for the procedural shape dataset."""

import numpy as np
import pytest

from genaccel.refdata import (
    ATTRIBUTES,
    HELDOUT_COMBOS,
    ShapeSpec,
    make_dataset,
    parse_caption,
    render,
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
