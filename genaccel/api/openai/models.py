"""``GET /models`` and ``GET /models/{id}`` in OpenAI's list shape (``{"object": "list", "data":
[{"id", "object": "model", "created", "owned_by"}]}``), with each model's ``modality`` added.
Served under the ``/openai`` prefix only: ``/v1/models`` is the native catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from genaccel.api.deps import Caller, Service
from genaccel.api.openai.errors import OpenAIError, OpenAIRoute
from pipelines.registry import ModelInfo

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])


def model_object(info: ModelInfo) -> dict[str, Any]:
    return {"id": info.name, "object": "model", "created": 0, "owned_by": f"genaccel-{info.source}",
            "modality": info.modality}


@router.get("/v1/models")
def list_models(service: Service, owner: Caller) -> dict[str, Any]:
    """Models this server can run."""
    return {"object": "list", "data": [model_object(m) for m in service.registry.available()]}


@router.get("/v1/models/{model:path}")
def retrieve_model(model: str, service: Service, owner: Caller) -> dict[str, Any]:
    """One model (404 ``model_not_found`` when this server has no such model)."""
    for info in service.registry.available():
        if info.name == model:
            return model_object(info)
    raise OpenAIError(404, f"model {model!r} does not exist here; fix: pick one of GET /openai/v1/models",
                      param="model", code="model_not_found")
