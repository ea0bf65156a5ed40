"""What every OpenAI-compatible route shares: reading a body into honoured, ignored and unknown
parameters, queueing its job through the job service, and waiting for it (bounded, cancelled
when the wait times out or the client goes away)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, Header, Request
from starlette.datastructures import UploadFile

from genaccel.api.openai.errors import NO_RETRY, OpenAIError, invalid
from genaccel.errors import JobStateConflict
from genaccel.service import JobService
from genaccel.spec import Job
from pipelines.modality import served_modalities
from pipelines.registry import ModelInfo

WARNINGS_HEADER = "X-Genaccel-Warnings"
"""Parameters a call accepted but did not honour, and what the job itself warned about, joined by
`` | `` (never dropped silently)."""
JOB_HEADER = "X-Genaccel-Job-Id"
"""The id of the job (or jobs, comma-separated) behind an answer, for ``GET /v1/jobs/{id}``."""

EXTRAS: dict[str, str] = {"steps": "steps", "seed": "seed", "profile": "profile",
                          "negative_prompt": "negative_prompt", "guidance_scale": "guidance_scale",
                          "priority": "priority", "cache": "cache"}
"""genaccel parameters every route accepts beside OpenAI's (the client's ``extra_body``), by the
flat request field they set."""


@dataclass
class Body:
    """One call's parameters, sorted: a parameter that is neither honoured nor knowingly ignored is
    refused (400 ``unknown_parameter``), as OpenAI does; an ignored one becomes a warning."""

    values: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, values: dict[str, Any], honoured: Iterable[str], ignored: dict[str, str],
             extras: dict[str, str] | None = None) -> Body:
        known = {*honoured, *ignored, *(extras if extras is not None else EXTRAS)}
        for name in values:
            if name not in known:
                raise invalid(name, f"unknown parameter {name!r}; fix: drop it (this endpoint takes "
                                    f"{', '.join(sorted(known))})", "unknown_parameter")
        body = cls({k: v for k, v in values.items() if v is not None})
        body.warnings = [f"{name} ignored: {why}" for name, why in ignored.items() if name in body.values]
        return body

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None:
            if required:
                raise invalid(name, f"{name} is required; fix: pass {name}", "missing_required_parameter")
            return None
        if not isinstance(value, str):
            raise invalid(name, f"{name}={value!r} must be a string")
        return value

    def number(self, name: str, kind: type[int] | type[float]) -> Any:
        """An int or float parameter (form fields arrive as text)."""
        value = self.values.get(name)
        if value is None:
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            if kind is float:
                return float(value)
            whole = float(value)
            if whole != int(whole):
                raise ValueError
            return int(whole)
        except (TypeError, ValueError):
            raise invalid(name, f"{name}={value!r} must be {'an integer' if kind is int else 'a number'}") from None

    def model(self, service: JobService) -> str | None:
        """The ``model`` asked for, through the operator's aliases (``GENACCEL_OPENAI_MODELS``)."""
        name = self.text("model")
        alias = service.settings.openai_models.get(name) if name is not None else None
        if alias is None:
            return name
        self.warnings.append(f"model {name!r} is served by {alias!r} here (GENACCEL_OPENAI_MODELS)")
        return alias

    def extras(self, mapping: dict[str, str] | None = None) -> dict[str, Any]:
        """The genaccel parameters present, as flat request fields."""
        return {flat: self.values[name] for name, flat in (mapping or EXTRAS).items() if name in self.values}


SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


def parse_size(value: Any) -> tuple[int | None, int | None]:
    """``"WIDTHxHEIGHT"`` as two ints; ``"auto"`` or nothing: the model's own size."""
    if value is None or value == "auto":
        return None, None
    found = SIZE.match(str(value))
    if not found:
        raise invalid("size", f"size={value!r} is invalid: must be WIDTHxHEIGHT such as 512x512, or auto; "
                              "fix: pass a size such as 512x512")
    return int(found[1]), int(found[2])


def idempotency(key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None) -> str | None:
    return key


IdempotencyKey = Annotated[str | None, Depends(idempotency)]


def headers(warnings: list[str], jobs: Iterable[Job]) -> dict[str, str]:
    """The warnings header (this call's ignored parameters and each job's own warnings) and the job ids."""
    found = list(warnings)
    for job in jobs:
        found += [w for w in job.metadata.get("warnings", []) if w not in found]
    out = {JOB_HEADER: ",".join(j.id for j in jobs)}
    if found:
        text = " | ".join(w.replace("\n", " ") for w in found)
        out[WARNINGS_HEADER] = text.encode("ascii", "replace").decode()[:4000]
    return out


async def submit(service: JobService, flat: dict[str, Any], owner: str, *, key: str | None, endpoint: str,
                 extra: dict[str, Any] | None = None) -> Job:
    """Queue ``flat`` through the job service, as the native API does (limits, idempotency)."""
    meta = {"api": "openai", "endpoint": endpoint, **(extra or {})}
    job, _ = await to_thread.run_sync(lambda: service.submit(flat, owner, idempotency_key=key, metadata=meta))
    return job


async def cancel(service: JobService, job_id: str, owner: str) -> None:
    with contextlib.suppress(JobStateConflict):  # it finished meanwhile
        await to_thread.run_sync(service.cancel, job_id, owner)


async def wait(service: JobService, job: Job, owner: str, request: Request | None, timeout_s: float) -> Job:
    """``job`` once finished. Past ``timeout_s``, or when the client hangs up, the job is
    cancelled (not left running) and a 504 is raised."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005  # fast jobs (cached, noop) answer in milliseconds; long ones are polled every 0.25 s
    while not job.done:
        if request is not None and await request.is_disconnected():
            await cancel(service, job.id, owner)
            raise OpenAIError(499, "the client went away; the job was cancelled", "server_error",
                              code="client_closed")
        if time.monotonic() >= deadline:
            await cancel(service, job.id, owner)
            raise OpenAIError(504, f"job {job.id} did not finish within {timeout_s:g} s and was cancelled; fix: ask "
                                   "for less (fewer steps, smaller size) or use the asynchronous native API "
                                   "(POST /v1/jobs); the operator sets the limit with GENACCEL_OPENAI_TIMEOUT_S",
                              "server_error", code="timeout", headers={**NO_RETRY, JOB_HEADER: job.id})
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)
        job = await to_thread.run_sync(service.store.get, job.id)
    return job


def succeeded(job: Job) -> Job:
    """``job`` if it succeeded; its failure as a 500 otherwise."""
    if job.state == "succeeded":
        return job
    if job.state == "cancelled":
        raise OpenAIError(500, f"job {job.id} was cancelled before it finished", "server_error", code="cancelled",
                          headers={**NO_RETRY, JOB_HEADER: job.id})
    error = job.error
    raise OpenAIError(500, f"job {job.id} failed: {error.message if error else 'no reason recorded'}",
                      "server_error", code=error.code if error else "pipeline_failed",
                      headers={**NO_RETRY, JOB_HEADER: job.id})


async def read_file(upload: Any, param: str, limit: int) -> bytes:
    """The bytes of an uploaded file field, size-checked."""
    if not isinstance(upload, UploadFile):
        raise invalid(param, f"{param} must be an uploaded file (multipart/form-data); fix: send the image as a "
                             "file field")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise invalid(param, f"{param} is larger than {limit} bytes; fix: send a smaller image")
    return data


async def form_or_json(request: Request) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A body sent as JSON or multipart/form-data: its single values, and every value by name
    (repeated fields such as ``image[]``)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data") or kind.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        many: dict[str, list[Any]] = {}
        for name, value in form.multi_items():
            many.setdefault(name.removesuffix("[]"), []).append(value)
        return {k: v[0] for k, v in many.items()}, many
    try:
        data = await request.json()
    except ValueError:
        raise invalid("body", "the body is not valid JSON; fix: send a JSON object or multipart/form-data",
                      "invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("body", "the body must be a JSON object", "invalid_json")
    return data, {k: [v] for k, v in data.items()}


def resolve_model(service: JobService, name: str | None, modality: str) -> ModelInfo:
    """The model a call runs (its own, or the server's default for ``modality``), refusing one of
    another modality (404 for a name this server does not know)."""
    if name is None:
        if modality not in served_modalities():
            raise invalid("model", f"no {modality} model is served here; fix: ask the operator to install one "
                                   "(see GET /openai/v1/models)", "unsupported_modality")
        name = service.registry.default_model(modality)
    info = service.registry.resolve(name)
    if info.modality != modality:
        raise invalid("model", f"model {info.name!r} makes {info.modality}, not {modality}; fix: pick a {modality} "
                               "model from GET /openai/v1/models", "wrong_modality")
    return info
