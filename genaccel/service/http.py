"""Artifact files as HTTP responses, for the REST API and the web UI's signed links alike."""

from __future__ import annotations

from fastapi.responses import FileResponse, Response, StreamingResponse

from genaccel.service.jobs import StoredFile


def file_response(found: StoredFile, *, attachment: bool = False, headers: dict[str, str] | None = None) -> Response:
    """A local file as a ``FileResponse``; an object-store file streamed through this server."""
    disposition = "attachment" if attachment else "inline"
    if found.local_path is not None:
        return FileResponse(found.local_path, media_type=found.media_type, filename=found.name,
                            content_disposition_type=disposition, headers=headers)
    return StreamingResponse(found.chunks(), media_type=found.media_type, headers={
        **(headers or {}), "Content-Disposition": f'{disposition}; filename="{found.name}"'})
