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

    def caption(self, rng: np.random.Generator | None = None) -> str:
        """E.g. 'a small red triangle at the top left on a grey background'.

        Without ``rng`` this is the one full, fixed form (what the shipped models were trained
        on).  With ``rng`` it is a :func:`natural_caption`: attributes left out, synonyms and other
        word orders, drawn from ``rng``.
        """
        if rng is not None:
            return natural_caption(self, rng)
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


def draw_shape(
    shape: str,
    fill: tuple[int, int, int],
    background: tuple[int, int, int],
    cx: float,
    cy: float,
    r: float,
    angle: float = 0.0,
    size: int = IMAGE_SIZE,
) -> Image.Image:
    """One shape of circumradius ``r`` px at centre (cx, cy) px on a flat ``background``.

    The drawing code every renderer (and the template check) shares: 4x supersampled, box
    downsampled.  ``angle`` (radians) rotates square/triangle/star.
    """
    s = _SS
    cx, cy, r = cx * s, cy * s, r * s
    big = Image.new("RGB", (size * s, size * s), background)
    draw = ImageDraw.Draw(big)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill)
    return big.resize((size, size), Image.Resampling.BOX)


#: The angle (radians, for :func:`draw_shape`) at which each shape stands upright: a square with
#: level sides, a triangle and a star with a point at the top.
UPRIGHT: dict[str, float] = {"circle": 0.0, "square": math.pi / 4, "triangle": 0.0, "star": 0.0}


def draw_angle(shape: str, rng: np.random.Generator, max_rotation: float | None = None) -> float:
    """A shape's angle from one uniform draw of ``rng``: any angle (``max_rotation=None``), or
    :data:`UPRIGHT` tilted by at most ``max_rotation`` radians either way."""
    angle = float(rng.uniform(0.0, 2 * math.pi))
    return angle if max_rotation is None else UPRIGHT[shape] + (angle / math.pi - 1.0) * max_rotation


def render(spec: ShapeSpec, rng: np.random.Generator, max_rotation: float | None = None) -> Image.Image:
    """Draw ``spec`` as a 64x64 RGB image with jitter drawn from ``rng``.

    ``max_rotation`` (radians): ``None`` turns square, triangle and star to any angle; a number
    tilts the upright shape (:data:`UPRIGHT`) by at most that much either way. The same draws
    are taken from ``rng`` either way, so the other jitter does not change with it.

    Why the reference models train on upright shapes: a denoiser that has not yet decided a
    rotation predicts the average over rotations, and the average of a square, a triangle or a
    star over all rotations is a disc. Trained on any rotation, the models drew circles right
    and most squares and small triangles as discs or blobs (docs/benchmarks.md, issue 15).
    """
    dx, dy = rng.uniform(-2.0, 2.0, size=2)
    r = _RADIUS[spec.size] * rng.uniform(0.9, 1.1)
    angle = draw_angle(spec.shape, rng, max_rotation)
    cx, cy = _CENTRES[spec.position]
    return draw_shape(
        spec.shape, COLOURS[spec.colour], BACKGROUNDS[spec.background], cx + dx, cy + dy, r, angle
    )


#: Radius (px) splitting "small" from "large" (geometric mean of the two nominal radii).
SIZE_SPLIT = math.sqrt(_RADIUS["small"] * _RADIUS["large"])
#: A free centre this close (px) to a named position's centre is labelled with that position.
POSITION_RADIUS = 6.0


def named_size(r: float) -> str:
    """The size word for circumradius ``r`` px."""
    return "small" if r < SIZE_SPLIT else "large"


def named_position(cx: float, cy: float) -> str | None:
    """The named position whose centre is within :data:`POSITION_RADIUS` px, else None."""
    name, (px, py) = min(_CENTRES.items(), key=lambda kv: (kv[1][0] - cx) ** 2 + (kv[1][1] - cy) ** 2)
    return name if math.hypot(px - cx, py - cy) <= POSITION_RADIUS else None


@dataclass(frozen=True)
class FreeShape:
    """A shape at any centre and size: attributes plus geometry; ``position`` is None off the
    named positions."""

    shape: str
    colour: str
    background: str
    cx: float
    cy: float
    r: float
    angle: float

    @property
    def size(self) -> str:
        return named_size(self.r)

    @property
    def position(self) -> str | None:
        return named_position(self.cx, self.cy)

    def draw(self) -> Image.Image:
        return draw_shape(self.shape, COLOURS[self.colour], BACKGROUNDS[self.background],
                          self.cx, self.cy, self.r, self.angle)


def sample_free(rng: np.random.Generator, split: str = "all", r_range: tuple[float, float] = (5.0, 17.0)
                ) -> FreeShape:
    """A shape at a uniformly random centre (kept inside the canvas) and radius in ``r_range``."""
    combos = _combos(split)
    shape, colour = combos[int(rng.integers(len(combos)))]
    r = float(rng.uniform(*r_range))
    lo, hi = r + 1.0, IMAGE_SIZE - r - 1.0
    cx, cy = (float(v) for v in rng.uniform(lo, hi, size=2))
    bg = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return FreeShape(shape, colour, bg, cx, cy, r, float(rng.uniform(0.0, 2 * math.pi)))


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
    n: int, seed: int, split: str = "train", max_rotation: float | None = None
) -> tuple[np.ndarray, list[ShapeSpec]]:
    """Return (uint8 array (n, 64, 64, 3), specs); deterministic in ``seed``. ``max_rotation``:
    see :func:`render`."""
    specs = sample_specs(n, seed, split)
    rng = np.random.default_rng([seed, 0x5EED])
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, spec in enumerate(specs):
        images[i] = np.asarray(render(spec, rng, max_rotation))
    return images, specs


# --- natural captions -------------------------------------------------------

_SAY: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"circle": ("circle", "circle", "disc"), "square": ("square",), "triangle": ("triangle",),
              "star": ("star",)},
    "colour": {c: (c,) for c in COLOURS} | {"magenta": ("magenta", "magenta", "purple")},
    "size": {"small": ("small", "small", "tiny", "little"), "large": ("large", "large", "big")},
    "background": {"white": ("white",), "grey": ("grey", "gray"), "black": ("black",)},
}
_WHERE: dict[str, tuple[str, ...]] = {
    "center": ("in the center", "in the centre", "in the middle", "at the center"),
    **{p: (f"at the {p}", f"in the {p} corner", f"at the {p.replace(' ', '-')}",
           f"in the {p.replace('top', 'upper').replace('bottom', 'lower')}")
       for p in POSITIONS if p != "center"},
}
_BG: tuple[str, ...] = ("on a {} background", "on {}", "against a {} background", "{} background")


def say(attribute: str, value: str, rng: np.random.Generator) -> str:
    """One of the words a natural caption uses for ``value`` of ``attribute`` ("gray" for grey...)."""
    words = _SAY[attribute][value]
    return words[int(rng.integers(len(words)))]


def background_phrase(colour: str, rng: np.random.Generator) -> str:
    """A natural phrase for the background ("on gray", "against a black background", ...)."""
    return _BG[int(rng.integers(len(_BG)))].format(say("background", colour, rng))


def natural_caption(spec: ShapeSpec, rng: np.random.Generator, drop: float = 0.3) -> str:
    """A varied caption of ``spec``: each attribute left out with probability ``drop`` (at least one
    kept; an unnamed shape is "shape"), synonyms (grey/gray, center/centre/middle, big/large, ...)
    and the object, position and background phrases in any order.  :func:`parse_caption` reads
    back exactly the attributes kept.  Deterministic in ``rng``.
    """
    keep = {a for a in ATTRIBUTES if rng.random() >= drop}
    if not keep:
        keep = {tuple(ATTRIBUTES)[int(rng.integers(len(ATTRIBUTES)))]}

    noun = say("shape", spec.shape, rng) if "shape" in keep else "shape"
    adjectives = [say(a, getattr(spec, a), rng) for a in ("size", "colour") if a in keep]
    obj = " ".join(["a", *adjectives, noun])
    phrases = [obj]
    if "position" in keep:
        opts = _WHERE[spec.position]
        phrases.append(opts[int(rng.integers(len(opts)))])
    if "background" in keep:
        phrases.append(background_phrase(spec.background, rng))
    order = [0, *rng.permutation(range(1, len(phrases))).tolist()] if rng.random() < 0.6 else \
        rng.permutation(len(phrases)).tolist()
    sep = ", " if rng.random() < 0.4 else " "
    return sep.join(phrases[i] for i in order)


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


def caption_vocabulary() -> list[str]:
    """Every word a caption of :func:`natural_caption` or :meth:`ShapeSpec.caption` can use, plus the
    parser's synonyms (so "pink" or "huge" typed by a user is one known token, not bytes)."""
    words = {"a", "at", "the", "on", "in", "background", "shape", "corner", "against"}
    for values in ATTRIBUTES.values():
        for value in values:
            words.update(value.split())
    for table in _SAY.values():
        for options in table.values():
            words.update(options)
    for phrases in (*_WHERE.values(), _BG):
        for phrase in phrases:
            words.update(re.findall(r"[a-z]+", phrase))
    for synonyms in _SYNONYMS.values():
        words.update(synonyms)
    return sorted(words)


#: Words that name a colour or shape outside the vocabulary: a prompt with one is unparsable.
UNKNOWN_WORDS: dict[str, frozenset[str]] = {
    "colour": frozenset({"orange", "brown", "violet", "teal", "navy", "gold", "golden", "silver", "beige",
                         "maroon", "olive", "turquoise", "lime", "indigo", "crimson", "scarlet", "lavender"}),
    "shape": frozenset({"hexagon", "pentagon", "octagon", "oval", "ellipse", "rectangle", "heart", "diamond",
                        "cross", "crescent", "ring", "arrow", "rhombus", "trapezoid", "hexagons", "pentagons",
                        "rectangles", "hearts", "ovals"}),
}


@dataclass(frozen=True)
class ParsedPrompt:
    """What :func:`parse_prompt` read: canonical attributes, and why it cannot be scored (if so)."""

    attributes: dict[str, str]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the prompt can be scored (names an attribute, nothing unknown or conflicting)."""
        return bool(self.attributes) and not self.problems


def _scan(text: str) -> tuple[dict[str, str], list[str]]:
    lowered = text.lower()
    out: dict[str, str] = {}
    problems: list[str] = []
    for word in re.findall(r"[a-z]+", lowered):
        for attr, table in _SYNONYMS.items():
            if word in table:
                if attr in out and out[attr] != table[word]:
                    problems.append(f"{attr} named twice ({out[attr]!r} and {table[word]!r})")
                out.setdefault(attr, table[word])
        for attr, words in UNKNOWN_WORDS.items():
            if word in words:
                problems.append(f"unknown {attr} {word!r}")
    m = _POSITION_RE.search(lowered)
    if m:
        if m.group("c"):
            out["position"] = "center"
        else:
            v = "top" if m.group("v") in ("top", "upper") else "bottom"
            out["position"] = f"{v} {m.group('h')}"
    return {k: out[k] for k in ATTRIBUTES if k in out}, problems


def parse_caption(text: str) -> dict[str, str]:
    """Attributes named in ``text`` (any subset) as canonical values.

    Object colours and background colours are disjoint vocabularies, so a
    white/grey/black word is always read as the background.  The first
    mention of each attribute wins.  See :func:`parse_prompt` to learn whether
    the prompt can be scored at all.
    """
    return _scan(text)[0]


def parse_prompt(text: str) -> ParsedPrompt:
    """Like :func:`parse_caption`, plus the problems that make a prompt unscorable: a colour or
    shape word outside the vocabulary (e.g. "orange", "hexagon"), an attribute named with two
    different values, or no attribute named at all.

    Example:
        >>> parse_prompt("an orange square").ok
        False
    """
    attributes, problems = _scan(text)
    if not attributes and not problems:
        problems = ["names no attribute"]
    return ParsedPrompt(attributes, tuple(dict.fromkeys(problems)))
