"""Quality of moving-shape clips: what a clip shows (per-frame attributes read by the image
evaluator, the majority over frames), which way it moves (the centroid track,
``refdata.moving_shapes.direction_of``), and how steady it is (the share of frames that agree
with the majority, per attribute).

Position is not scored: it changes along the clip by design. Exact match per clip: every
attribute the prompt names (shape, colour, size, background, direction; the fixed caption names
all five, a user's prompt any of them) read back right; a clip whose shape reads "none" is never
an exact match, and one that does not move fails any direction it is asked for.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from genaccel.refdata.moving_shapes import MOTION_PHRASES, direction_of
from genaccel.refdata.shapes import parse_prompt

SCORED = ("shape", "colour", "size", "background")


def parse_video_caption(text: str) -> dict[str, str] | None:
    """The attributes and the direction a moving-shape prompt names, in the fixed caption's form
    or a user's ("a big red ball going up on gray"); only what it names (``None``: it names
    nothing scorable, or something outside the vocabulary, like "an orange hexagon")."""
    lowered = text.strip().lower()
    parsed = parse_prompt(lowered)
    named = {k: v for k, v in parsed.attributes.items() if k in SCORED}
    if any(not p.startswith("names no attribute") for p in parsed.problems):
        return None
    said = [(len(phrase), direction) for direction, phrases in MOTION_PHRASES.items() for phrase in phrases
            if re.search(rf"\b{phrase}\b", lowered)]
    if said:
        named["direction"] = max(said)[1]  # the longest phrase: "moving from left to right", not "right"
    return named or None


def read_clip(evaluator: Any, frames: np.ndarray | Sequence[Any]) -> dict[str, Any]:
    """The majority reading of each attribute over the frames, the direction, and per attribute
    the share of frames agreeing with the majority (temporal consistency)."""
    arrays = np.stack([np.asarray(f) for f in frames])
    reads = evaluator.predict(arrays)
    out: dict[str, Any] = {"direction": direction_of(arrays) or "none", "consistency": {}}
    for attribute in SCORED:
        counts = Counter(r[attribute] for r in reads)
        value, n = counts.most_common(1)[0]
        out[attribute] = value
        out["consistency"][attribute] = n / len(reads)
    return out


def score_clips(evaluator: Any, clips: Sequence[Any], prompts: Sequence[str]) -> dict[str, float | None]:
    """Exact match, direction accuracy, per-attribute accuracy and temporal consistency over
    ``clips`` made for ``prompts`` (captions that do not parse are not scored)."""
    exact, direction, consistency = [], [], []
    per_attribute: dict[str, list[bool]] = {a: [] for a in SCORED}
    for clip, prompt in zip(clips, prompts, strict=True):
        wanted = parse_video_caption(prompt)
        if wanted is None:
            continue
        got = read_clip(evaluator, clip)
        right = {a: got[a] == wanted[a] for a in SCORED if a in wanted}
        for a, ok in right.items():
            per_attribute[a].append(ok)
        if "direction" in wanted:
            right["direction"] = got["direction"] == wanted["direction"]
            direction.append(right["direction"])
        exact.append(all(right.values()) and got["shape"] != "none")
        consistency.append(float(np.mean(list(got["consistency"].values()))))

    def mean(values: Sequence[float | bool]) -> float | None:
        return float(np.mean(values)) if values else None

    return {"exact_match": mean(exact), "direction_accuracy": mean(direction),
            "temporal_consistency": mean(consistency), "scored": float(len(exact)),
            **{f"{a}_accuracy": mean(v) for a, v in per_attribute.items()}}
