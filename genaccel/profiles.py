"""Named acceleration profiles: ``off``, ``balanced``, ``fast``, ``max``. Each resolves, per
denoiser family, to a *recipe*: an ordered list of techniques (``genaccel/accel/``) and,
for profiles that change the sampler, their own step count. ``off`` runs the pipeline as its
authors ship it. An explicit technique list in a request is applied after the profile's.

The recipes are training-free (no weights needed); the measured speed-up and quality of each on
the reference models are in docs/benchmarks.md and shown by ``genaccel profiles``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from genaccel.families import UNETS, Family
from genaccel.spec import TechniqueSpec


@dataclass(frozen=True)
class Recipe:
    techniques: tuple[TechniqueSpec, ...] = ()
    steps: int | None = None
    """The profile's own step count (used when the request names none); ``None``: the model's."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    recipes: dict[Family, Recipe] = field(default_factory=dict)
    student: bool = False
    """Run the model's best distilled student (its own sampler and steps) where it has one; the
    recipes are the fallback for models without one."""

    def recipe(self, family: str) -> Recipe:
        """The recipe for ``family``; families a profile has nothing for run as ``off``."""
        try:
            return self.recipes.get(Family(family), Recipe())
        except ValueError:  # not a family genaccel knows: nothing to accelerate
            return Recipe()


def _t(name: str, **options: object) -> TechniqueSpec:
    return TechniqueSpec(name=name, options=dict(options))


_DIT = (Family.IMAGE_DIT,)


def _per_family(unet: Recipe, dit: Recipe, speech: Recipe | None = None) -> dict[Family, Recipe]:
    return {**dict.fromkeys(UNETS, unet), **dict.fromkeys(_DIT, dit),
            **({Family.SPEECH_DIT: speech} if speech else {})}


PROFILES: dict[str, Profile] = {
    "off": Profile("off", "no acceleration: the model's own scheduler and step count"),
    "balanced": Profile(
        "balanced", "training-free, no measurable quality loss: DPM-Solver++ at 15 steps, with DeepCache every "
        "2nd step (UNet) or TaylorSeer (DiT); 6 sway-sampled Euler steps (speech flow decoders)",
        _per_family(Recipe((_t("solver"), _t("deepcache", interval=2)), steps=15),
                    Recipe((_t("solver"), _t("taylorseer", interval=2, warmup=3)), steps=15),
                    Recipe(steps=6)),
    ),
    "fast": Profile(
        "fast", "training-free, small quality loss: DPM-Solver++ at 12 steps with DeepCache every 2nd step (UNet); "
        "DPM-Solver++ at 8 steps (DiT); 4 sway-sampled Euler steps (speech flow decoders)",
        _per_family(Recipe((_t("solver"), _t("deepcache", interval=2)), steps=12),
                    Recipe((_t("solver"),), steps=8), Recipe(steps=4)),
    ),
    "max": Profile(
        "max", "training-free, fastest, visible quality loss: DPM-Solver++ at 8 steps with DeepCache (UNet) or "
        "TaylorSeer (DiT); 2 sway-sampled Euler steps (speech flow decoders)",
        _per_family(Recipe((_t("solver"), _t("deepcache", interval=2)), steps=8),
                    Recipe((_t("solver"), _t("taylorseer", interval=2, warmup=3)), steps=8), Recipe(steps=2)),
    ),
}
# Video (issue 16): caches only, at the model's own sampler and step count (the solver technique
# does not fit the flow-matching video DiTs). TaylorSeer runs on every served video DiT (Wan, LTX,
# Latte, CogVideoX); DeepCache on AnimateDiff and Stable Video Diffusion UNets.
for _name, _every in (("balanced", 2), ("fast", 3), ("max", 4)):
    PROFILES[_name].recipes.update({
        Family.VIDEO_DIT: Recipe((_t("taylorseer", interval=_every, warmup=3),)),
        Family.VIDEO_UNET: Recipe((_t("deepcache", interval=_every),)),
    })

# audio DiTs (Stable Audio, music-ref) already sample with EDM DPM-Solver++: fewer steps, then a cache
for _name, _recipe in {"balanced": Recipe(steps=15), "fast": Recipe(steps=10),
                       "max": Recipe((_t("taylorseer", interval=2, warmup=3),), steps=8)}.items():
    PROFILES[_name].recipes[Family.AUDIO_DIT] = _recipe
PROFILES["turbo"] = Profile(
    "turbo", "the model's distilled few-step student where it has one (e.g. shapes-sd -> shapes-sd-lcm, 4 steps, "
    "one pass per step), with its own sampler and step count; otherwise the max recipe (training-free)",
    PROFILES["max"].recipes, student=True)


def describe(profile: Profile) -> dict[str, object]:
    """A JSON-ready summary: what each family gets, and the measured speed-ups."""
    return {
        "name": profile.name, "description": profile.description, "uses_students": profile.student,
        "families": {family: {"techniques": [t.model_dump() for t in r.techniques], "steps": r.steps}
                     for family, r in profile.recipes.items()},
        "measured": measured_speedups().get(profile.name, {}),
    }


def measured_speedups(results: Path | None = None) -> dict[str, dict[str, float]]:
    """``{profile: {model: speed-up}}`` from the recorded benchmark runs in ``bench/results``
    (read again only when a file there changes)."""
    folder = results or Path(__file__).resolve().parents[1] / "bench" / "results"
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.json")))
    return _read_speedups(folder, stamp)


@functools.lru_cache(maxsize=4)
def _read_speedups(folder: Path, stamp: tuple[tuple[str, int], ...]) -> dict[str, dict[str, float]]:
    import json

    found: dict[str, dict[str, float]] = {}
    for name, _ in stamp:
        try:
            rows = json.loads((folder / name).read_text()).get("rows", [])
        except (OSError, ValueError, AttributeError):
            continue
        for row in rows:
            measured = isinstance(row, dict) and row.get("speedup") and not row.get("baseline")
            if measured and row.get("profile") in PROFILES:
                found.setdefault(row["profile"], {})[str(row.get("model"))] = round(float(row["speedup"]), 2)
    return found
