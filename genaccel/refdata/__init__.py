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
    draw_shape,
    make_dataset,
    natural_caption,
    parse_caption,
    parse_prompt,
    render,
    sample_free,
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
    "draw_shape",
    "make_dataset",
    "natural_caption",
    "parse_caption",
    "parse_prompt",
    "render",
    "sample_free",
    "sample_specs",
]
