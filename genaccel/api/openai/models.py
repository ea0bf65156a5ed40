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
    data = [model_object(m) for m in service.registry.available()]
    served = {m["id"]: m for m in data}
    data += [{**served[target], "id": alias, "owned_by": "genaccel-alias", "alias_of": target}
             for alias, target in service.settings.openai_models.items() if target in served]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
def retrieve_model(model: str, service: Service, owner: Caller) -> dict[str, Any]:
    """One model (404 ``model_not_found`` when this server has no such model)."""
    for found in list_models(service, owner)["data"]:
        if found["id"] == model:
            return dict(found)
    raise OpenAIError(404, f"model {model!r} does not exist here; fix: pick one of GET /openai/v1/models",
                      param="model", code="model_not_found")
