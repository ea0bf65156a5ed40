"""What this server can run: models and acceleration profiles."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from genaccel.api.deps import ERRORS, Caller, Service
from genaccel.profiles import PROFILES
from genaccel.profiles import describe as describe_profile

router = APIRouter(tags=["catalogue"], responses=ERRORS)


@router.get("/v1/models")
def models(service: Service, owner: Caller) -> list[dict[str, Any]]:
    """Models this server can run, with their defaults."""
    return [{"name": m.name, "modality": m.modality, "family": m.family, "source": m.source,
             "pipeline_class": m.pipeline_class, "defaults": asdict(m.defaults), "description": m.description}
            for m in service.registry.available()]


@router.get("/v1/profiles")
def profiles(owner: Caller) -> list[dict[str, Any]]:
    """Acceleration profiles and what each does."""
    return [describe_profile(p) for p in PROFILES.values()]
