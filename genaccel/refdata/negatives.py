"""Images that show no recognisable shape, for training and testing a reader that can say "none".

Two generators with disjoint families of distortions and separate drawing code, so that a
reader trained on one can be tested on the other:

* :func:`train_negative` (the evaluator trains on these): irregular blobs (random radial-noise
  polygons, unions of ellipses), melted shapes (a real shape warped by a smooth random
  displacement field), two shapes in one image, an empty canvas, and a shape under heavy
  Gaussian blur (sigma 3.5-6 px).
* :func:`heldout_negative` (used only to measure rejection): random-walk scribbles, crescents,
  rings, thin bars, speckle clouds, shapes cut into pieces by background-coloured stripes, and
  shapes smeared by directional motion blur.  None of these appears in training, and none is
  drawn through the training generator's code path.

Each returns a uint8 (64, 64, 3) array, the object colour name when one colour was used (else
None) and the background name.  Deterministic in the ``numpy`` generator passed.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from genaccel.refdata.shapes import BACKGROUNDS, COLOURS, IMAGE_SIZE, SHAPES, draw_shape

TRAIN_KINDS = ("blob", "ellipses", "melted", "two", "empty", "blur")
HELDOUT_KINDS = ("scribble", "crescent", "ring", "bar", "speckle", "cut", "smear")
_SS = 4
Negative = tuple[np.ndarray, str | None, str]


def _pick(rng: np.random.Generator, names: tuple[str, ...] | list[str]) -> str:
    return names[int(rng.integers(len(names)))]


def _canvas(bg: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    big = Image.new("RGB", (IMAGE_SIZE * _SS, IMAGE_SIZE * _SS), BACKGROUNDS[bg])
    return big, ImageDraw.Draw(big)


def _down(big: Image.Image) -> np.ndarray:
    return np.asarray(big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX))


def _centre(rng: np.random.Generator, r: float) -> tuple[float, float]:
    lo, hi = r + 1.0, IMAGE_SIZE - r - 1.0
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _shape(rng: np.random.Generator, colour: str, bg: str, r: float | None = None) -> np.ndarray:
    r = float(rng.uniform(6.0, 16.0)) if r is None else r
    cx, cy = _centre(rng, r)
    return np.asarray(draw_shape(_pick(rng, SHAPES), COLOURS[colour], BACKGROUNDS[bg], cx, cy, r,
                                 float(rng.uniform(0, 2 * math.pi))))


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``img`` (H, W, 3) at float coordinates (H, W), edges clamped."""
    h, w = img.shape[:2]
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    f = img.astype(np.float64)
    top = f[y0, x0] * (1 - fx) + f[y0, x0 + 1] * fx
    bot = f[y0 + 1, x0] * (1 - fx) + f[y0 + 1, x0 + 1] * fx
    return np.clip(top * (1 - fy) + bot * fy, 0, 255).astype(np.uint8)


# --- training negatives ---------------------------------------------------------------------

def train_negative(rng: np.random.Generator, kind: str | None = None) -> Negative:
    """One training negative of ``kind`` (random kind when None); see the module docstring."""
    kind = kind or _pick(rng, TRAIN_KINDS)
    bg = _pick(rng, list(BACKGROUNDS))
    colour = _pick(rng, list(COLOURS))
    if kind == "empty":
        return np.asarray(_canvas(bg)[0].resize((IMAGE_SIZE, IMAGE_SIZE))), None, bg
    if kind == "blob":
        big, draw = _canvas(bg)
        r = float(rng.uniform(7.0, 16.0))
        cx, cy = _centre(rng, r)
        n = int(rng.integers(5, 13))
        noise = rng.uniform(0.3, 0.6)
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = r * (1 + rng.uniform(-noise, noise, n))
        pts = [((cx + q * math.cos(a)) * _SS, (cy + q * math.sin(a)) * _SS)
               for a, q in zip(angles, radii, strict=True)]
        draw.polygon(pts, fill=COLOURS[colour])
        return _down(big), colour, bg
    if kind == "ellipses":
        big, draw = _canvas(bg)
        cx, cy = _centre(rng, 14.0)
        for _ in range(int(rng.integers(2, 5))):
            ex, ey = cx + rng.uniform(-7, 7), cy + rng.uniform(-7, 7)
            ax, ay = rng.uniform(3, 11), rng.uniform(3, 11)
            draw.ellipse(((ex - ax) * _SS, (ey - ay) * _SS, (ex + ax) * _SS, (ey + ay) * _SS),
                         fill=COLOURS[colour])
        return _down(big), colour, bg
    if kind == "melted":
        img = _shape(rng, colour, bg, float(rng.uniform(8.0, 16.0)))
        yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
        dx = np.zeros_like(xx)
        dy = np.zeros_like(yy)
        amp = rng.uniform(3.5, 7.0)
        for _ in range(3):
            kx, ky = rng.uniform(0.05, 0.25, 2)
            p1, p2 = rng.uniform(0, 2 * math.pi, 2)
            dx += amp / 3 * np.sin(kx * yy + ky * xx + p1) * 3 ** 0.5
            dy += amp / 3 * np.sin(ky * xx - kx * yy + p2) * 3 ** 0.5
        if rng.random() < 0.5:  # drip: pull pixels down more toward the bottom
            dy -= amp * ((yy / IMAGE_SIZE) ** 2) * rng.uniform(1.0, 2.0)
        return _bilinear(img, xx + dx, yy + dy), colour, bg
    if kind == "two":
        r1, r2 = rng.uniform(5.0, 11.0, 2)
        c2 = colour if rng.random() < 0.5 else _pick(rng, list(COLOURS))
        first = _shape(rng, colour, bg, float(r1))
        second = _shape(rng, c2, bg, float(r2))
        mask = np.any(second != np.array(BACKGROUNDS[bg], dtype=np.uint8), axis=-1)
        out = first.copy()
        out[mask] = second[mask]
        return out, colour if c2 == colour else None, bg
    if kind == "blur":
        img = _shape(rng, colour, bg)
        sigma = float(rng.uniform(3.5, 6.0))
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma))), colour, bg
    raise ValueError(f"kind must be one of {TRAIN_KINDS}, got {kind!r}")


# --- held-out negatives (never trained on) --------------------------------------------------

def heldout_negative(rng: np.random.Generator, kind: str | None = None) -> Negative:
    """One held-out negative of ``kind`` (random kind when None); see the module docstring."""
    kind = kind or _pick(rng, HELDOUT_KINDS)
    bg = _pick(rng, list(BACKGROUNDS))
    colour = _pick(rng, list(COLOURS))
    fill = COLOURS[colour]
    big, draw = _canvas(bg)
    if kind == "scribble":
        x, y = _centre(rng, 14.0)
        pts = [(x * _SS, y * _SS)]
        heading = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(5, 10))):
            heading += rng.uniform(-2.0, 2.0)
            x = float(np.clip(x + 7 * math.cos(heading), 4, 60))
            y = float(np.clip(y + 7 * math.sin(heading), 4, 60))
            pts.append((x * _SS, y * _SS))
        draw.line(pts, fill=fill, width=int(rng.integers(2, 5)) * _SS, joint="curve")
        return _down(big), colour, bg
    if kind in ("crescent", "ring"):
        r = float(rng.uniform(9.0, 16.0))
        cx, cy = _centre(rng, r)
        draw.ellipse(((cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS), fill=fill)
        if kind == "ring":
            q, ox, oy = r * rng.uniform(0.5, 0.75), 0.0, 0.0
        else:
            q = r * rng.uniform(0.8, 1.0)
            a = rng.uniform(0, 2 * math.pi)
            ox, oy = r * 0.5 * math.cos(a), r * 0.5 * math.sin(a)
        draw.ellipse(((cx + ox - q) * _SS, (cy + oy - q) * _SS, (cx + ox + q) * _SS, (cy + oy + q) * _SS),
                     fill=BACKGROUNDS[bg])
        return _down(big), colour, bg
    if kind == "bar":
        length, width = rng.uniform(22.0, 44.0), rng.uniform(3.0, 6.0)
        cx, cy = _centre(rng, length / 2)
        a = rng.uniform(0, math.pi)
        u, v = (math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))
        pts = [((cx + su * length / 2 * u[0] + sv * width / 2 * v[0]) * _SS,
                (cy + su * length / 2 * u[1] + sv * width / 2 * v[1]) * _SS)
               for su, sv in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
        draw.polygon(pts, fill=fill)
        return _down(big), colour, bg
    if kind == "speckle":
        cx, cy = _centre(rng, 14.0)
        for _ in range(int(rng.integers(25, 70))):
            x, y = cx + rng.normal(0, 7), cy + rng.normal(0, 7)
            d = rng.uniform(0.7, 1.8)
            draw.ellipse(((x - d) * _SS, (y - d) * _SS, (x + d) * _SS, (y + d) * _SS), fill=fill)
        return _down(big), colour, bg
    if kind == "cut":
        pic = Image.fromarray(_shape(rng, colour, bg, float(rng.uniform(11.0, 16.0))))
        cut = ImageDraw.Draw(pic)
        step, gap = int(rng.integers(5, 9)), int(rng.integers(2, 4))
        vertical = rng.random() < 0.5
        for k in range(int(rng.integers(0, step)), IMAGE_SIZE, step):
            box = (k, 0, k + gap - 1, IMAGE_SIZE) if vertical else (0, k, IMAGE_SIZE, k + gap - 1)
            cut.rectangle(box, fill=BACKGROUNDS[bg])
        return np.asarray(pic), colour, bg
    if kind == "smear":
        img = _shape(rng, colour, bg, float(rng.uniform(6.0, 12.0))).astype(np.float64)
        length = int(rng.integers(14, 24))
        a = rng.uniform(0, 2 * math.pi)
        acc = np.zeros_like(img)
        for t in range(length):
            sx, sy = round(t * math.cos(a)), round(t * math.sin(a))
            acc += np.roll(img, (sy, sx), axis=(0, 1))
        return (acc / length).astype(np.uint8), colour, bg
    raise ValueError(f"kind must be one of {HELDOUT_KINDS}, got {kind!r}")


def negatives(n: int, seed: int, generator: str = "heldout") -> tuple[np.ndarray, list[str]]:
    """``n`` negatives from the ``"train"`` or ``"heldout"`` generator, kinds in turn; returns
    (uint8 (n, 64, 64, 3), kind of each)."""
    kinds = TRAIN_KINDS if generator == "train" else HELDOUT_KINDS
    make = train_negative if generator == "train" else heldout_negative
    rng = np.random.default_rng([seed, 0xBAD])
    names = [kinds[i % len(kinds)] for i in range(n)]
    return np.stack([make(rng, k)[0] for k in names]), names
