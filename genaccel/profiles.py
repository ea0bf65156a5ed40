"""Named acceleration profiles. Each resolves, per denoiser family, to an ordered list of
technique configs (``genaccel/accel/``); ``off`` runs the pipeline as its authors ship it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str


PROFILES: dict[str, Profile] = {
    "off": Profile("off", "no acceleration: the model's own scheduler and step count"),
}
