"""A second reader of reference-shape images with nothing learned: template IoU and hue distance.

The background of the reference data is one flat colour, so the foreground is every pixel far
from the border's median colour.  Shape: each candidate shape is drawn with the data
generator's own :func:`~genaccel.refdata.shapes.draw_shape` at the foreground's centroid, with
the radius that gives the foreground's area, at a sweep of rotations; the best IoU against the
mask wins, and below ``min_iou`` the read is "none" (as is an empty or a scattered foreground).
Colour: the hue of the foreground's median colour against the palette's hues ("none" if too
grey or too far from every hue).  Size, position and background come from the same
measurements.  Written here because no library reads this synthetic vocabulary; skimage would
only replace the centroid/area arithmetic.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from genaccel.refdata.shapes import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    SHAPES,
    draw_shape,
    named_position,
    named_size,
)

#: Area of each shape at circumradius 1 (as drawn by ``draw_shape``).
_UNIT_AREA: dict[str, float] = {
    "circle": math.pi,
    "square": 2 * 0.9**2,
    "triangle": 3 * math.sqrt(3) / 4 * 1.05**2,
    "star": 5 * 1.1 * 0.45 * math.sin(2 * math.pi / 10) * 2 / 2,
}
#: Rotational symmetry period (radians) searched per shape.
_PERIOD = {"circle": 0.0, "square": math.pi / 2, "triangle": 2 * math.pi / 3, "star": 2 * math.pi / 5}


def _hue(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))


_PALETTE_HUES = {name: _hue(rgb)[0] * 360.0 for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class TemplateRead:
    """Attributes read by :func:`read_template`, plus the evidence: best IoU, centre and radius."""

    attributes: dict[str, str]
    iou: float
    centre: tuple[float, float] | None
    radius: float | None


def hue_distance(a: float, b: float) -> float:
    """Angular distance between two hues in degrees (0..180)."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def read_colour(rgb: tuple[float, float, float], max_hue_distance: float = 20.0, min_saturation: float = 0.35
                ) -> str:
    """Nearest palette colour by hue, or "none" for a grey or off-palette colour."""
    h, s, v = _hue(rgb)
    if s < min_saturation or v < 0.25:
        return "none"
    name, hue = min(_PALETTE_HUES.items(), key=lambda kv: hue_distance(kv[1], h * 360.0))
    return name if hue_distance(hue, h * 360.0) <= max_hue_distance else "none"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def read_template(image: np.ndarray, min_iou: float = 0.7, angles: int = 8, fg_distance: float = 80.0
                  ) -> TemplateRead:
    """Read one uint8 (64, 64, 3) image; see the module docstring.

    Args:
        image: uint8 RGB array (64, 64, 3).
        min_iou: below this best template IoU the shape is "none".
        angles: rotations tried per symmetry period, then 7 finer ones around the best at 3 radii
            around the area estimate.
        fg_distance: RGB distance from the background beyond which a pixel is foreground.

    Returns:
        A :class:`TemplateRead`; ``attributes`` holds all five attributes, "none" where unread.
    """
    img = np.asarray(image)
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        from PIL import Image

        img = np.asarray(Image.fromarray(img.astype(np.uint8)).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)))
    f = img.astype(np.float64)
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = min(BACKGROUNDS, key=lambda k: float(np.sum((np.array(BACKGROUNDS[k]) - bg_rgb) ** 2)))
    mask = np.linalg.norm(f - bg_rgb, axis=-1) > fg_distance
    area = int(mask.sum())
    none = {"shape": "none", "colour": "none", "size": "none", "position": "none", "background": background}
    if area < 12:
        return TemplateRead(none, 0.0, None, None)
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    colour = read_colour(tuple(float(v) for v in np.median(f[mask], axis=0)))  # type: ignore[arg-type]
    best = ("none", 0.0, 0.0)
    bg_fill = BACKGROUNDS[background]
    ink = (255, 255, 255) if background == "black" else (0, 0, 0)
    def score(shape: str, r: float, theta: float) -> float:
        ideal = np.asarray(draw_shape(shape, ink, bg_fill, cx, cy, r, theta)).astype(np.float64)
        return _iou(mask, np.linalg.norm(ideal - np.array(bg_fill), axis=-1) > 127.0)

    for shape in SHAPES:
        r0 = math.sqrt(area / _UNIT_AREA[shape])
        period = _PERIOD[shape]
        step = period / angles
        # coarse sweep of rotations, then a finer one (and three radii) around the best
        coarse = [0.0] if period == 0 else [step * k for k in range(angles)]
        theta0 = max(coarse, key=lambda t: score(shape, r0, t))
        fine = [theta0] if period == 0 else [theta0 + step * d / 8 for d in range(-3, 4)]
        for scale in (0.96, 1.0, 1.04):
            for theta in fine:
                iou = score(shape, r0 * scale, theta)
                if iou > best[1]:
                    best = (shape, iou, r0 * scale)
    shape, iou, radius = best
    attributes = {
        "shape": shape if iou >= min_iou else "none",
        "colour": colour,
        "size": named_size(radius) if radius else "none",
        "position": named_position(cx, cy) or "none",
        "background": background,
    }
    return TemplateRead(attributes, iou, (cx, cy), radius)


def read_templates(images: np.ndarray, min_iou: float = 0.7) -> list[dict[str, str]]:
    """:func:`read_template` attributes for each image of a uint8 (N, 64, 64, 3) batch."""
    return [read_template(im, min_iou).attributes for im in np.asarray(images)]
