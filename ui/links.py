"""Signed, expiring links to job artifacts for the web UI (``genaccel.service.links``), and the
route that serves them.

The UI never hands outputs to Gradio (whose file cache serves whatever it holds to anyone with
the URL): it renders links to its own route, signed by ``FileLinks``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response

from genaccel.errors import JobNotFound
from genaccel.service import JobService
from genaccel.service.http import file_response
from genaccel.service.links import DEFAULT_TTL_S, FileLinks

__all__ = ["DEFAULT_TTL_S", "FileLinks", "add_file_route"]


def add_file_route(app: FastAPI, links: FileLinks, service: JobService) -> None:
    """Serve ``{links.prefix}/{job_id}/{name}`` (register it before mounting Gradio on the prefix's parent)."""

    def ui_file(job_id: str, name: str, exp: Annotated[int, Query()] = 0, sig: Annotated[str, Query()] = "",
                download: Annotated[int, Query()] = 0) -> Response:
        if not links.check(job_id, name, exp, sig):
            return JSONResponse({"error": {"code": "forbidden", "message": "this file link is invalid or has "
                                           "expired; fix: reopen the job in the web UI for a fresh link"}},
                                status_code=403)
        try:
            found = service.file(service.store.get(job_id), name)
        except JobNotFound:
            return JSONResponse({"error": {"code": "job_not_found", "message": f"{job_id}/{name} is gone"}},
                                status_code=404)
        return file_response(found, attachment=bool(download), headers={"Cache-Control": "private, max-age=3600"})

    app.add_api_route(links.prefix + "/{job_id}/{name}", ui_file, methods=["GET"], include_in_schema=False)
