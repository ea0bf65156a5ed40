"""Deterministic procedural 64x64 images of one coloured shape, with captions.

Each image shows exactly one shape described by a :class:`ShapeSpec`
(shape, colour, size, position, background).  Rendering is 4x supersampled
and box-downsampled for antialiasing; a numpy ``Generator`` drives small
jitter (centre offset of up to +-2 px, +-10 % size, random rotation for
square/triangle/star).  The same seed always gives the same specs and pixels.

Held-out split: the (shape, colour) pairs in :data:`HELDOUT_COMBOS` never occur
in the ``"train"`` split; ``"heldout"`` yields only those pairs and ``"all"``
draws from all 24 pairs.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
_SS = 4  # supersampling factor

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 190, 25),
    "blue": (30, 60, 235),
    "yellow": (245, 225, 20),
    "magenta": (225, 30, 225),
    "cyan": (20, 225, 235),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left",
    "top right",
    "bottom left",
    "bottom right",
    "center",
)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "black": (0, 0, 0),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "position": POSITIONS,
    "background": tuple(BACKGROUNDS),
}

#: (shape, colour) pairs excluded from "train" and used alone by "heldout".
#: Every shape and four different colours appear exactly once.
HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "magenta"),
        ("square", "cyan"),
        ("triangle", "yellow"),
        ("star", "green"),
    }
)

_CENTRES: dict[str, tuple[float, float]] = {
    "top left": (17.0, 17.0),
    "top right": (47.0, 17.0),
    "bottom left": (17.0, 47.0),
    "bottom right": (47.0, 47.0),
    "center": (32.0, 32.0),
}
_RADIUS: dict[str, float] = {"small": 7.5, "large": 15.0}  # circumradius in px


@dataclass(frozen=True)
class ShapeSpec:
    """Attributes of one image; all values are canonical names from ATTRIBUTES."""

    shape: str
    colour: str
    size: str
    position: str
    background: str

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}")

    def caption(self) -> str:
        """E.g. 'a small red triangle at the top left on a grey background'."""
        where = (
            "in the center" if self.position == "center" else f"at the {self.position}"
        )
        return (
            f"a {self.size} {self.colour} {self.shape} {where} "
            f"on a {self.background} background"
        )

    def as_dict(self) -> dict[str, str]:
        """Attribute name -> value."""
        return asdict(self)


def _polygon(
    shape: str, cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    if shape == "square":
        n, radii = 4, [r * 0.9]
    elif shape == "triangle":
        n, radii = 3, [r * 1.05]
    else:  # star: 5 points, alternating outer/inner radius
        n, radii = 10, [r * 1.1, r * 0.45]
    pts = []
    for i in range(n):
        a = angle + 2 * math.pi * i / n
        rad = radii[i % len(radii)]
        pts.append((cx + rad * math.sin(a), cy - rad * math.cos(a)))
    return pts


def render(spec: ShapeSpec, rng: np.random.Generator) -> Image.Image:
    """Draw ``spec`` as a 64x64 RGB image with jitter drawn from ``rng``."""
    dx, dy = rng.uniform(-2.0, 2.0, size=2)
    r = _RADIUS[spec.size] * rng.uniform(0.9, 1.1)
    angle = rng.uniform(0.0, 2 * math.pi)
    cx, cy = _CENTRES[spec.position]
    s = _SS
    cx, cy, r = (cx + dx) * s, (cy + dy) * s, r * s
    big = Image.new(
        "RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), BACKGROUNDS[spec.background]
    )
    draw = ImageDraw.Draw(big)
    fill = COLOURS[spec.colour]
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(spec.shape, cx, cy, r, angle), fill=fill)
    return big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def _combos(split: str) -> list[tuple[str, str]]:
    every = [(s, c) for s in SHAPES for c in COLOURS]
    if split == "all":
        return every
    if split == "train":
        return [sc for sc in every if sc not in HELDOUT_COMBOS]
    if split == "heldout":
        return [sc for sc in every if sc in HELDOUT_COMBOS]
    raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")


def sample_specs(n: int, seed: int, split: str = "train") -> list[ShapeSpec]:
    """``n`` specs drawn uniformly (pair, size, position, background) from ``split``."""
    combos = _combos(split)
    rng = np.random.default_rng(seed)
    ci = rng.integers(len(combos), size=n)
    si = rng.integers(len(SIZES), size=n)
    pi = rng.integers(len(POSITIONS), size=n)
    bi = rng.integers(len(BACKGROUNDS), size=n)
    bgs = tuple(BACKGROUNDS)
    return [
        ShapeSpec(combos[c][0], combos[c][1], SIZES[s], POSITIONS[p], bgs[b])
        for c, s, p, b in zip(ci, si, pi, bi, strict=False)
    ]


def make_dataset(
    n: int, seed: int, split: str = "train"
) -> tuple[np.ndarray, list[ShapeSpec]]:
    """Return (uint8 array (n, 64, 64, 3), specs); deterministic in ``seed``."""
    specs = sample_specs(n, seed, split)
    rng = np.random.default_rng([seed, 0x5EED])
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, spec in enumerate(specs):
        images[i] = np.asarray(render(spec, rng))
    return images, specs


# --- caption parsing -------------------------------------------------------

_SYNONYMS: dict[str, dict[str, str]] = {
    "shape": {
        "circle": "circle",
        "circles": "circle",
        "disc": "circle",
        "disk": "circle",
        "square": "square",
        "squares": "square",
        "triangle": "triangle",
        "triangles": "triangle",
        "star": "star",
        "stars": "star",
    },
    "colour": {c: c for c in COLOURS} | {"purple": "magenta", "pink": "magenta"},
    "size": {
        "small": "small",
        "tiny": "small",
        "little": "small",
        "large": "large",
        "big": "large",
        "huge": "large",
    },
    "background": {"white": "white", "grey": "grey", "gray": "grey", "black": "black"},
}
_POSITION_RE = re.compile(
    r"\b(?P<v>top|upper|bottom|lower)[\s-]*(?P<h>left|right)\b|\b(?P<c>cent(?:er|re)|middle)\b"
)


def parse_caption(text: str) -> dict[str, str]:
    """Attributes named in ``text`` (any subset) as canonical values.

    Object colours and background colours are disjoint vocabularies, so a
    white/grey/black word is always read as the background.  The first
    mention of each attribute wins.
    """
    lowered = text.lower()
    out: dict[str, str] = {}
    for word in re.findall(r"[a-z]+", lowered):
        for attr, table in _SYNONYMS.items():
            if attr not in out and word in table:
                out[attr] = table[word]
    m = _POSITION_RE.search(lowered)
    if m:
        if m.group("c"):
            out["position"] = "center"
        else:
            v = "top" if m.group("v") in ("top", "upper") else "bottom"
            out["position"] = f"{v} {m.group('h')}"
    return {k: out[k] for k in ATTRIBUTES if k in out}
