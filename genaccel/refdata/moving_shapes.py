"""Deterministic procedural clips of one coloured shape moving across a flat background, with
captions such as "a large yellow star moving from right to left on a white background".

Frames are drawn with ``shapes.draw_shape`` (the image data's renderer), so every frame is an
image the image models' VAE and evaluator already know. The shape travels along one axis from
near one edge to near the other (centre 14 -> 50 px at 64 px), the other coordinate fixed near
the middle; a numpy ``Generator`` drives small jitter (start, end, cross position, size, angle).
``direction_of`` reads the direction back from a clip's centroid track (the motion check).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from genaccel.refdata.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    background_phrase,
    draw_angle,
    draw_shape,
    say,
)

DIRECTIONS: dict[str, tuple[int, int]] = {  # unit step in image coordinates (x right, y down)
    "left to right": (1, 0),
    "right to left": (-1, 0),
    "top to bottom": (0, 1),
    "bottom to top": (0, -1),
}
RADIUS = {"small": 7.5, "large": 13.0}
"""Circumradius (px); large is a little smaller than in the still images so it fits its path."""
TRAVEL = (14.0, 50.0)
"""Centre coordinate at the first and the last frame, along the direction of motion."""
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left to right": ("moving from left to right", "moving right", "moving to the right", "going right",
                      "sliding right", "travelling left to right"),
    "right to left": ("moving from right to left", "moving left", "moving to the left", "going left",
                      "sliding left", "travelling right to left"),
    "top to bottom": ("moving from top to bottom", "moving down", "going down", "falling", "dropping",
                      "sliding down"),
    "bottom to top": ("moving from bottom to top", "moving up", "going up", "rising", "climbing", "sliding up"),
}
"""What a user may write for each direction (the first: the fixed caption's own words)."""
MOTION_WORDS = ("moving", "from", "to")
"""Words of the fixed video captions that the still-image captions never use."""
NATURAL_MOTION_WORDS = tuple(sorted({w for phrases in MOTION_PHRASES.values() for p in phrases for w in p.split()}))
"""Every word of :data:`MOTION_PHRASES` (some, like "left", the image captions use too;
:func:`genaccel.training.shapes_video.extend_tokenizer` adds only the missing ones)."""


@dataclass(frozen=True)
class MotionSpec:
    shape: str
    colour: str
    size: str
    background: str
    direction: str

    def caption(self) -> str:
        return (f"a {self.size} {self.colour} {self.shape} moving from {self.direction} "
                f"on a {self.background} background")


def natural_video_caption(spec: MotionSpec, rng: np.random.Generator, drop: float = 0.3) -> str:
    """A varied caption of ``spec`` as users write them: shape, size, colour and background each
    left out with probability ``drop`` (an unnamed shape is "shape"), the direction left out with
    probability ``drop / 3`` (kept when nothing else is named), synonyms for every value ("going
    up", "falling", "gray", "big", ...), and the background phrase before or after the motion. Deterministic in ``rng``;
    :func:`genaccel.metrics.video.parse_video_caption` reads back exactly what it names."""
    keep = {a for a in ("shape", "size", "colour", "background") if rng.random() >= drop}
    noun = say("shape", spec.shape, rng) if "shape" in keep else "shape"
    obj = " ".join(["a", *[say(a, getattr(spec, a), rng) for a in ("size", "colour") if a in keep], noun])
    phrases = [obj]
    if rng.random() >= drop / 3 or not keep:  # a caption names at least one thing
        options = MOTION_PHRASES[spec.direction]
        phrases.append(options[int(rng.integers(len(options)))])
    if "background" in keep:
        where = background_phrase(spec.background, rng)
        return f"{where}, {' '.join(phrases)}" if rng.random() < 0.25 else " ".join([*phrases, where])
    return " ".join(phrases)


def sample_motion_specs(n: int, seed: int) -> list[MotionSpec]:
    """``n`` specs, every attribute uniform; the colour never equals the background's look-alike
    (yellow on white, and black on black cannot happen: no black shapes)."""
    rng = np.random.default_rng(seed)
    out: list[MotionSpec] = []
    while len(out) < n:
        spec = MotionSpec(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(SIZES)),
                          str(rng.choice(list(BACKGROUNDS))), str(rng.choice(list(DIRECTIONS))))
        out.append(spec)
    return out


def render_clip(spec: MotionSpec, frames: int, rng: np.random.Generator, size: int = 64,
                max_rotation: float | None = None) -> list[Image.Image]:
    """The clip of ``spec``: ``frames`` frames of ``size`` px, the shape moving along its direction.
    ``max_rotation``: see :func:`genaccel.refdata.shapes.render` (upright shapes train better)."""
    dx, dy = DIRECTIONS[spec.direction]
    start, end = (np.array(TRAVEL) + rng.uniform(-2, 2, size=2)) * size / 64
    cross = (32 + rng.uniform(-4, 4)) * size / 64
    r = RADIUS[spec.size] * rng.uniform(0.9, 1.1) * size / 64
    angle = draw_angle(spec.shape, rng, max_rotation)
    out = []
    for i in range(frames):
        along = start + (end - start) * i / max(1, frames - 1)
        if dx:
            cx, cy = (along if dx > 0 else size - along), cross
        else:
            cx, cy = cross, (along if dy > 0 else size - along)
        out.append(draw_shape(spec.shape, COLOURS[spec.colour], BACKGROUNDS[spec.background], cx, cy, r, angle,
                              size=size))
    return out


def make_clips(n: int, frames: int, seed: int, size: int = 64, max_rotation: float | None = None
               ) -> tuple[np.ndarray, list[MotionSpec]]:
    """``n`` clips as uint8 ``(n, frames, size, size, 3)`` and their specs."""
    specs = sample_motion_specs(n, seed)
    rng = np.random.default_rng(seed + 1)
    clips = np.stack([np.stack([np.asarray(f) for f in render_clip(s, frames, rng, size, max_rotation)])
                      for s in specs])
    return clips, specs


def centroid_track(frames: np.ndarray | list[Image.Image]) -> list[tuple[float, float] | None]:
    """Per frame, the centre of the pixels that differ from the frame's border colour (the
    background); ``None`` for a frame where nothing stands out."""
    out: list[tuple[float, float] | None] = []
    for frame in frames:
        a = np.asarray(frame, dtype=np.float32)
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        background = np.median(border, axis=0)
        mask = np.abs(a - background).sum(-1) > 90
        if mask.sum() < 4:
            out.append(None)
            continue
        ys, xs = np.nonzero(mask)
        out.append((float(xs.mean()), float(ys.mean())))
    return out


def direction_of(frames: np.ndarray | list[Image.Image], min_travel: float = 0.15) -> str | None:
    """The direction of motion read from the centroid track (the dominant axis of the line fitted
    through it), or ``None`` when the shape moves less than ``min_travel`` of the frame width."""
    track = [(i, p) for i, p in enumerate(centroid_track(frames)) if p is not None]
    if len(track) < 2:
        return None
    t = np.array([i for i, _ in track], dtype=np.float32)
    xy = np.array([p for _, p in track], dtype=np.float32)
    slope = np.polyfit(t, xy, 1)[0] * (len(frames) - 1)  # displacement over the clip, per axis
    width = np.asarray(frames[0]).shape[1]
    if np.abs(slope).max() < min_travel * width:
        return None
    if abs(slope[0]) >= abs(slope[1]):
        return "left to right" if slope[0] > 0 else "right to left"
    return "top to bottom" if slope[1] > 0 else "bottom to top"
