"""OpenAI's error object (``{"error": {"message", "type", "param", "code"}}``) and the status codes
its clients map to exception classes, for every failure on the compatible routes.

The routes use ``OpenAIRoute``: it turns genaccel's own errors (and FastAPI's validation errors,
and a missing or unknown key) into that shape, so the native API keeps its own error body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from genaccel.errors import (
    GenAccelError,
    InvalidRequest,
    JobNotFound,
    ModelNotAvailable,
    UnknownModel,
)
from genaccel.service import AuthError, TooManyRequests

log = logging.getLogger(__name__)
NO_RETRY = {"x-should-retry": "false"}
"""OpenAI's clients retry 5xx answers unless told not to; a job that failed or timed out would
only fail or time out again (and run again on the workers)."""


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", *,
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(param: str, message: str, code: str = "invalid_value") -> OpenAIError:
    """A 400 naming the parameter."""
    return OpenAIError(400, message, param=param, code=code)


def translate(exc: Exception) -> OpenAIError | None:
    """The OpenAI-shaped equivalent of one of genaccel's errors (``None``: not one of ours)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, AuthError):
        return OpenAIError(401, str(exc), "authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, TooManyRequests):
        return OpenAIError(429, exc.message, "rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": exc.retry_after})
    if isinstance(exc, UnknownModel | ModelNotAvailable):
        return OpenAIError(404, exc.message, param="model", code="model_not_found")
    if isinstance(exc, InvalidRequest):
        return OpenAIError(400, exc.message, param=PARAM_NAMES.get(exc.field, exc.field), code=exc.code)
    if isinstance(exc, JobNotFound):
        return OpenAIError(404, exc.message, code="not_found")
    if isinstance(exc, GenAccelError):
        status = exc.http_status if exc.http_status in (400, 404, 409, 429) else 500
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return OpenAIError(status, exc.message, kind, code=exc.code, headers=NO_RETRY if status >= 500 else None)
    if isinstance(exc, HTTPException):  # e.g. a malformed multipart body
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return OpenAIError(exc.status_code, str(exc.detail), kind, code="invalid_body" if exc.status_code == 400
                           else None, headers=dict(exc.headers or {}))
    if isinstance(exc, RequestValidationError):
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0])
        return OpenAIError(400, f"{field} is invalid: {err['msg']}", param=field, code="invalid_value")
    return None


PARAM_NAMES = {"prompt": "prompt", "num_outputs": "n", "width": "size", "height": "size", "width*height": "size",
               "output_format": "response_format", "init_image": "image", "num_frames": "seconds"}
"""genaccel's field names as the OpenAI parameter a client sent (``error.param``)."""


class OpenAIRoute(APIRoute):
    """A route whose failures are answered in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                found = translate(exc)
                if found is None:  # a bug of ours: logged with its traceback, answered in the client's shape
                    log.exception("%s %s failed", request.method, request.url.path)
                    found = OpenAIError(500, f"internal error ({type(exc).__name__}); the server log has the "
                                             "traceback", "server_error", code="internal_error", headers=NO_RETRY)
                return found.response()

        return guarded
