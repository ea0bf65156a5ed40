"""The queue and history tab: the caller's jobs from the store (so they survive a reload),
with show, cancel and re-run."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from ui import render
from ui.page import FAILURES, Page, message

HISTORY_POLL_S = 3.0


def history_tab(blocks: gr.Blocks, page: Page, key: gr.Textbox) -> None:
    """Build the history tab inside the current ``gr.Tab``; it lists on load, on a key change and every few s."""
    gr.Markdown("Your jobs, newest first (kept by the server: they survive a page reload). Click a row to select it.")
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh")
        selected = gr.Textbox(label="Selected job", max_lines=1, elem_id="history-selected", scale=3)
        open_ = gr.Button("Show", size="sm", elem_id="history-show")
        cancel = gr.Button("Cancel", size="sm", variant="stop", elem_id="history-cancel")
        rerun = gr.Button("Re-run", size="sm", elem_id="history-rerun")
    error = gr.HTML(elem_id="history-error")
    table = gr.Dataframe(headers=render.HISTORY_HEADERS, interactive=False, wrap=True, elem_id="history-table",
                         max_height=420)
    ids = gr.State([])
    progress = gr.HTML()
    result = gr.HTML(elem_id="history-result")
    timings = gr.Markdown()
    params = gr.Code("", language="json", label="Generation parameters", lines=4)
    timer = gr.Timer(HISTORY_POLL_S)

    def load(api_key: str) -> tuple[Any, ...]:
        try:
            jobs = page.jobs.history(page.jobs.owner(api_key))
        except FAILURES as exc:
            return render.error_html(message(exc)), [], []
        positions = {j.id: page.jobs.queue_position(j) for j in jobs if j.state == "queued"}
        return "", render.history_rows(jobs, positions=positions), [j.id for j in jobs]

    def follow(api_key: str, job_id: str) -> tuple[Any, ...]:
        """Refresh the shown job while it runs (and once more as it finishes)."""
        try:
            job = page.jobs.get(job_id.strip(), page.jobs.owner(api_key)) if job_id.strip() else None
        except FAILURES:
            job = None
        if job is None or (job.done and (job.finished_at or 0) < time.time() - 2 * HISTORY_POLL_S):
            return (gr.skip(),) * 4
        return page.show(job)

    def pick(job_ids: list[str], evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        return job_ids[row] if isinstance(row, int) and 0 <= row < len(job_ids) else ""

    def act(api_key: str, job_id: str, action: str) -> tuple[Any, ...]:
        try:
            owner = page.jobs.owner(api_key)
            job_id = job_id.strip()
            if action == "cancel":
                job = page.jobs.cancel(job_id, owner)
            elif action == "rerun":
                job = page.jobs.rerun(page.jobs.get(job_id, owner), owner)
            else:
                job = page.jobs.get(job_id, owner)
        except FAILURES as exc:
            return render.error_html(message(exc)), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return ("", job.id, *page.show(job))

    listing = [error, table, ids]
    shown = [error, selected, progress, result, timings, params]
    refresh.click(load, key, listing, queue=False, api_visibility="private")
    timer.tick(load, key, listing, queue=False, api_visibility="private")
    timer.tick(follow, [key, selected], shown[2:], queue=False, api_visibility="private")
    for trigger in (blocks.load, key.change):
        trigger(load, key, listing, queue=False, api_visibility="private")
    table.select(pick, ids, selected, queue=False, api_visibility="private").then(
        lambda k, j: act(k, j, "show"), [key, selected], shown, queue=False, api_visibility="private")
    open_.click(lambda k, j: act(k, j, "show"), [key, selected], shown, queue=False, api_visibility="private")
    cancel.click(lambda k, j: act(k, j, "cancel"), [key, selected], shown, queue=False,
                 api_visibility="private").then(load, key, listing, queue=False, api_visibility="private")
    rerun.click(lambda k, j: act(k, j, "rerun"), [key, selected], shown, queue=False,
                api_visibility="private").then(load, key, listing, queue=False, api_visibility="private")
