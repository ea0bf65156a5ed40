"""What every route depends on: the job service of the app, and the caller's owner id (API key
checked, one request taken from its rate limit)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from genaccel.api.views import ErrorView
from genaccel.service import JobService

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorView, "description": "missing or unknown API key"},
    404: {"model": ErrorView, "description": "no such job (or not yours)"},
    422: {"model": ErrorView, "description": "invalid request: the error names field, value, limit and fix"},
    429: {"model": ErrorView, "description": "rate limit or queued-job cap reached; see Retry-After"},
}


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def get_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's owner id; raises ``AuthError`` (401) or ``TooManyRequests`` (429)."""
    return get_service(request).owner(authorization, spend=True)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


Service = Annotated[JobService, Depends(get_service)]
Caller = Annotated[str, Depends(get_caller)]
