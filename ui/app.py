"""The Gradio web UI, mounted at ``/ui`` on the FastAPI app that ``genaccel serve`` runs.

``build_ui(backend)`` returns the Blocks; ``mount_ui(app, backend)`` adds the signed file route
and mounts it. The UI runs on the job system, not on Gradio's queue: a click validates and
queues a job (``ui/jobs.py``) and returns at once, a ``gr.Timer`` polls the store for progress,
and Stop sets the job's cancel flag. Outputs are shown through signed links (``ui/links.py``),
never through Gradio's shared file cache. ``gr.api`` endpoints (submit, job, cancel, history)
give ``gradio_client`` the same operations as JSON.
"""

from __future__ import annotations

from typing import cast

import gradio as gr
from fastapi import FastAPI

from genaccel.service import Backend, JobService
from genaccel.spec import MODALITIES, Modality
from ui import render
from ui.compare import compare_tab
from ui.generate import generate_tab
from ui.history import history_tab
from ui.links import FileLinks, add_file_route
from ui.page import Page, unavailable_reason

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web-font download: the page works offline


def build_ui(backend: Backend, *, links: FileLinks | None = None) -> gr.Blocks:
    """The web UI for ``backend``: one tab per modality, history, side by side.

    Args:
        backend: the store, dispatcher, registry and settings the REST API uses.
        links: signs artifact links; ``mount_ui`` passes the one whose route it registered.

    Returns:
        The Blocks, to be mounted with ``mount_ui`` (or ``gr.mount_gradio_app``).
    """
    page = Page(backend, links or FileLinks("/ui/files"))
    keys_on = page.jobs.keys.enabled
    with gr.Blocks(title="genaccel", analytics_enabled=False, delete_cache=(1800, 3600)) as blocks:
        gr.Markdown("## genaccel\nImages, video, music and speech through the job queue, with acceleration "
                    "profiles. REST API docs at [/docs](/docs); OpenAI-compatible routes at /openai/v1.")
        with gr.Row(visible=keys_on, elem_id="api-key-row"):
            key = gr.Textbox(label="API key", type="password", max_lines=1, scale=3, elem_id="api-key",
                             placeholder="this server needs a key: each key sees only its own jobs")
            key_status = gr.HTML()
        saved_key = gr.BrowserState("", storage_key="genaccel-api-key")
        # first, so that these names are theirs: the JSON API for gradio_client
        gr.api(page.api_submit, api_name="submit", queue=False)
        gr.api(page.api_job, api_name="job", queue=False)
        gr.api(page.api_cancel, api_name="cancel", queue=False)
        gr.api(page.api_history, api_name="history", queue=False)
        with gr.Tabs():
            for modality in MODALITIES:
                with gr.Tab(modality.capitalize(), id=modality, elem_id=f"tab-{modality}"):
                    reason = unavailable_reason(backend, modality)
                    if reason:
                        gr.Markdown(reason, elem_id=f"{modality}-unavailable")
                    else:
                        generate_tab(blocks, page, cast(Modality, modality), key)
            with gr.Tab("Queue & history", id="history", elem_id="tab-history"):
                history_tab(blocks, page, key)
            with gr.Tab("Side by side", id="compare", elem_id="tab-compare"):
                compare_tab(page, key)
        if keys_on:
            key.change(lambda k: (page.key_status(k), k), key, [key_status, saved_key], queue=False,
                       api_visibility="private", trigger_mode="always_last")
            blocks.load(lambda k: k, saved_key, key, queue=False, api_visibility="private")
    return blocks


def mount_ui(app: FastAPI, backend: Backend, path: str = "/ui") -> FastAPI:
    """Mount the web UI on ``app`` at ``path``, with its signed file route at ``{path}/files``.

    Uploads are capped at the API's init-image limit, and Gradio may serve nothing from the
    server's home or outputs folders.

    Example:
        >>> app = create_app(backend)   # doctest: +SKIP
        >>> mount_ui(app, backend)      # doctest: +SKIP
    """
    path = "/" + path.strip("/")
    links = FileLinks(f"{path}/files")
    add_file_route(app, links, JobService(backend))  # before the mount, which would catch the path otherwise
    settings = backend.settings
    blocked = sorted({str(p.expanduser().resolve()) for p in (settings.home, settings.outputs)})
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(app, build_ui(backend, links=links), path=path,
                               max_file_size=settings.limits.init_image_max_bytes, allowed_paths=[],
                               blocked_paths=blocked, footer_links=["api"], run_history=False, show_error=False,
                               ssr_mode=False, mcp_server=False, theme=theme, css=render.CSS)
