"""The REST API (FastAPI): routers over the job service (``genaccel/service``).

``create_app(backend)`` receives its store, dispatcher and registry (SQLite + threads or
Redis + Celery); it never builds them, so the same routes serve both shapes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from genaccel.api.limits import BodyLimit
from genaccel.api.openai import mount_openai
from genaccel.api.routes import catalogue, jobs, operations
from genaccel.errors import GenAccelError
from genaccel.service import AuthError, Backend, JobService, TooManyRequests


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(title="genaccel", version="1", description=(
        "Generate images, video, speech and music through a job queue. Submit a job, follow it "
        "with `GET /v1/jobs/{id}` or its server-sent events, then download its artifacts. With API keys "
        "configured, send `Authorization: Bearer KEY`; each key sees only its own jobs."))
    app.add_middleware(BodyLimit, max_bytes=backend.settings.max_request_bytes)
    app.state.backend = backend
    app.state.service = JobService(backend)

    @app.exception_handler(GenAccelError)
    async def genaccel_error(_: Request, exc: GenAccelError) -> JSONResponse:
        headers = {"Retry-After": exc.retry_after} if isinstance(exc, TooManyRequests) else None
        return _error(exc.http_status, exc.to_dict(), headers)

    @app.exception_handler(AuthError)
    async def auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return _error(401, {"code": "unauthorized", "message": str(exc)}, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0])
        message = f"{field} is invalid: {err['msg']}; fix: see the OpenAPI schema at /docs"
        return _error(422, {"code": "invalid_request", "message": message, "field": field})

    for router in (jobs.router, catalogue.router, operations.router):
        app.include_router(router)
    mount_openai(app)
    return app
