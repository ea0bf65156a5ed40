"""Health and Prometheus metrics (no key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from genaccel.api.deps import Service
from genaccel.api.metrics import render_metrics
from pipelines.modality import served_modalities

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(service: Service) -> dict[str, Any]:
    """Liveness and the store's reachability."""
    return {"status": "ok", "queued": service.store.count(state="queued"), "modalities": served_modalities(),
            "auth": service.keys.enabled}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(service: Service) -> PlainTextResponse:
    """Prometheus text: jobs by state, queue depth, job run-time histogram, worker busy time."""
    return PlainTextResponse(render_metrics(service.store.stats()), media_type="text/plain; version=0.0.4")
