"""OpenAI-compatible routes, so clients written for OpenAI's API reach genaccel by changing their
base URL: images (generations, edits), speech, video (asynchronous) and models.

Where they live: the whole surface is under ``/openai/v1`` (a client's ``base_url``), because
``/v1/models`` is genaccel's own catalogue (a JSON list, not OpenAI's list object). The routes
whose paths the native API does not use (``/v1/images/...``, ``/v1/audio/speech``,
``/v1/videos...``) answer at ``/v1`` as well. Every call goes through the job service like the
native API (keys, per-key isolation, rate limit, queued-job cap, idempotency, metrics) and answers
errors in OpenAI's shape (``errors.py``). docs/openai.md lists what each route honours and ignores.
"""

from __future__ import annotations

from fastapi import FastAPI

from genaccel.api.openai import files, images, models, speech, videos
from genaccel.service.links import FileLinks

PREFIX = "/openai"


def mount_openai(app: FastAPI) -> None:
    """Add the compatible routes to the native app."""
    app.state.openai_links = FileLinks(files.PREFIX)
    for router in (models.router, images.router, speech.router, videos.router):
        app.include_router(router, prefix=PREFIX)
    for router in (images.router, speech.router, videos.router):
        app.include_router(router, include_in_schema=False)  # also at /v1: these paths are free there
    app.include_router(files.router)
