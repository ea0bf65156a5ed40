"""The signed links of image ``url`` answers: ``GET /openai/files/{job}/{name}?exp=&sig=``, no key
needed (OpenAI's image URLs are fetchable by whoever holds them, for an hour)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from genaccel.api.deps import Service
from genaccel.api.openai.errors import OpenAIError, OpenAIRoute
from genaccel.service.http import file_response
from genaccel.service.links import FileLinks

router = APIRouter(route_class=OpenAIRoute, tags=["openai"], include_in_schema=False)
PREFIX = "/openai/files"


@router.get(PREFIX + "/{job_id}/{name}")
def signed_file(request: Request, job_id: str, name: str, service: Service, exp: Annotated[int, Query()] = 0,
                sig: Annotated[str, Query()] = "") -> Response:
    links: FileLinks = request.app.state.openai_links
    if not links.check(job_id, name, exp, sig):
        raise OpenAIError(403, "this link is invalid or has expired; fix: generate the image again for a fresh "
                               "url, or ask for response_format=b64_json", "permission_error", code="link_expired")
    found = service.file(service.store.get(job_id), name)
    return file_response(found, headers={"Cache-Control": "private, max-age=3600"})
