"""Procedural captioned reference data (coloured shapes)."""

from genaccel.refdata.shapes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    HELDOUT_COMBOS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeSpec,
    make_dataset,
    parse_caption,
    render,
    sample_specs,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLOURS",
    "HELDOUT_COMBOS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "ShapeSpec",
    "make_dataset",
    "parse_caption",
    "render",
    "sample_specs",
]
