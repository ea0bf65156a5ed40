"""The side-by-side tab: one prompt and seed with the ``off`` profile and an accelerated one,
both results and both latencies."""

from __future__ import annotations

from typing import Any

import gradio as gr

from genaccel.profiles import PROFILES
from genaccel.spec import Job
from ui import render
from ui.page import FAILURES, POLL_S, Page, message


def compare_tab(page: Page, key: gr.Textbox) -> None:
    """Build the side-by-side tab inside the current ``gr.Tab``."""
    models = [m.name for m in page.backend.registry.available() if m.modality == "image"]
    default = page.backend.registry.default_model("image")
    fast = [p for p in PROFILES if p != "off"]
    gr.Markdown("The same prompt and seed with the `off` profile and an accelerated one: both results, both "
                "latencies (`run_s`, the pipeline call alone).")
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(label="Prompt", lines=2, scale=4, elem_id="compare-prompt")
        with gr.Column(scale=2):
            model = gr.Dropdown(models, value=default if default in models else models[0], label="Model")
            profile = gr.Dropdown(fast, value="fast" if "fast" in fast else fast[0], label="Accelerated profile")
        with gr.Column(scale=1, min_width=140):
            seed = gr.Number(42, precision=0, label="Seed")
            go = gr.Button("Compare", variant="primary", elem_id="compare-go")
    error = gr.HTML(elem_id="compare-error")
    with gr.Row():
        with gr.Column():
            gr.Markdown("**off**")
            off_progress, off_result, off_time = gr.HTML(), gr.HTML(elem_id="compare-off"), gr.Markdown()
        with gr.Column():
            accel_title = gr.Markdown("**fast**")
            acc_progress, acc_result, acc_time = gr.HTML(), gr.HTML(elem_id="compare-accel"), gr.Markdown()
    summary = gr.HTML(elem_id="compare-summary")
    pair = gr.State([])
    timer = gr.Timer(POLL_S, active=False)
    views = [off_progress, off_result, off_time, acc_progress, acc_result, acc_time, summary]

    def show(a: Job, b: Job) -> tuple[Any, ...]:
        pa, ra, ta, _ = page.show(a)
        pb, rb, tb, _ = page.show(b)
        return (pa, ra, ta, pb, rb, tb, render.compare_summary(a, b), gr.Timer(active=not (a.done and b.done)))

    def compare(api_key: str, text: str, model_name: str, profile_name: str, seed_value: Any) -> tuple[Any, ...]:
        flat = {"prompt": text or "", "model": model_name, "seed": seed_value}
        try:
            owner = page.jobs.owner(api_key)
            a = page.jobs.submit({**flat, "profile": "off"}, owner)
            b = page.jobs.submit({**flat, "profile": profile_name}, owner)
        except FAILURES as exc:
            return (render.error_html(message(exc)), gr.skip(), gr.skip(), *(gr.skip(),) * len(views), gr.skip())
        return ("", [a.id, b.id], f"**{profile_name}**", *show(a, b))

    def poll(api_key: str, ids: list[str]) -> tuple[Any, ...]:
        try:
            owner = page.jobs.owner(api_key)
            a, b = (page.jobs.get(i, owner) for i in ids)
        except (*FAILURES, ValueError):
            return (*(gr.skip(),) * len(views), gr.Timer(active=False))
        return show(a, b)

    go.click(compare, [key, prompt, model, profile, seed], [error, pair, accel_title, *views, timer], queue=False,
             api_visibility="private")
    timer.tick(poll, [key, pair], [*views, timer], queue=False, api_visibility="private")
