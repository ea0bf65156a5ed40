"""One generation tab (image, video, speech or music): prompt, model and profile pickers,
advanced parameters with the API's limits, live progress, Stop, outputs and re-runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gradio as gr

from genaccel.profiles import PROFILES
from genaccel.settings import Limits
from genaccel.spec import Job, Modality
from pipelines.modality import adapter_for
from pipelines.registry import ModelInfo
from ui import render
from ui.jobs import optional_number
from ui.page import FAILURES, POLL_S, Page, message


def _model_md(info: ModelInfo) -> str:
    d, honoured = info.defaults, adapter_for(info).fields
    parts = [f"{d.steps} steps", f"guidance {d.guidance_scale:g}"]
    if "width" in honoured:
        parts.append(f"{d.width}×{d.height}")
    if d.num_frames:
        parts.append(f"{d.num_frames} frames at {d.fps:g} fps" if d.fps else f"{d.num_frames} frames")
    if d.duration_s:
        parts.append(f"{d.duration_s:g} s" + (f" (at most {d.max_duration_s:g} s)" if d.max_duration_s else ""))
    if d.sample_rate:
        parts.append(f"{d.sample_rate} Hz")
    if d.voices:
        parts.append(f"voices {', '.join(d.voices)}")
    return f"`{info.name}` ({info.family}): {', '.join(parts)}. {info.description}"


def _number_box(label: str, default: float | None, elem_id: str, empty: str = "") -> gr.Textbox:
    """An optional number: empty means the model's default (shown as the placeholder)."""
    hint = empty or ("the model's" if default is None else f"the model's: {default:g}")
    return gr.Textbox(label=label, placeholder=f"empty: {hint}", max_lines=1, elem_id=elem_id)


INTEGER_FIELDS = frozenset({"seed", "width", "height", "frames"})
NUMBER_FIELDS = frozenset({*INTEGER_FIELDS, "guidance", "fps", "duration", "speed", "loudness", "fade"})


def tab_fields(models: Iterable[ModelInfo]) -> set[str]:
    """The request fields some model of a tab honours (its adapter's ``fields``)."""
    return {name for info in models for name in adapter_for(info).fields}


def _modality_fields(honoured: set[str], models: dict[str, ModelInfo], default: str, modality: str,
                     limits: Limits) -> dict[str, Any]:
    """The advanced parameters the tab's adapters declare, keyed by flat request name."""
    d = models[default].defaults
    fields: dict[str, Any] = {}
    if "width" in honoured:
        size = f"{limits.size_min} to {limits.size_max}, a multiple of {limits.size_multiple}"
        fields["width"] = _number_box(f"Width ({size})", d.width, f"{modality}-width")
        fields["height"] = _number_box(f"Height ({size})", d.height, f"{modality}-height")
    if "num_frames" in honoured:
        fields["frames"] = _number_box(f"Frames (1 to {limits.frames_max})", d.num_frames, f"{modality}-frames")
    if "fps" in honoured:
        fields["fps"] = _number_box(f"Frames per second (up to {limits.fps_max:g})", d.fps, f"{modality}-fps")
    if "duration_s" in honoured:
        most = d.max_duration_s or limits.duration_max_s
        fields["duration"] = _number_box(f"Duration in seconds (up to {most:g})", d.duration_s,
                                         f"{modality}-duration")
    if "loudness_db" in honoured:
        fields["loudness"] = _number_box("Loudness in LUFS (-60 to -5, e.g. -14)", None, f"{modality}-loudness",
                                         empty="as generated")
    if "fade_s" in honoured:
        fields["fade"] = _number_box("Fade in/out in seconds", None, f"{modality}-fade", empty="none")
    if "voice" in honoured:
        voices = sorted({v for m in models.values() for v in m.defaults.voices})
        fields["voice"] = gr.Dropdown(voices, value=d.voices[0] if d.voices else None, label="Voice",
                                      elem_id=f"{modality}-voice")
    if "speed" in honoured:
        fields["speed"] = gr.Slider(limits.speed_min, limits.speed_max, value=1.0, step=0.05, label="Speed",
                                    elem_id=f"{modality}-speed")
    if "init_image" in honoured:
        mb = limits.init_image_max_bytes / 2**20
        fields["init_image"] = gr.Image(None, type="filepath", sources=["upload"], height=160,
                                        label=f"Init image (image-to-image; PNG, JPEG or WebP up to {mb:g} MB)")
        fields["strength"] = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength (with an init image)")
    formats = sorted({f for m in models.values() for f in adapter_for(m).formats})
    if len(formats) > 1:
        fields["format"] = gr.Dropdown(formats, value=adapter_for(models[default]).formats[0], label="File format",
                                       elem_id=f"{modality}-format")
    return fields


#: The prompt box's example per tab, in the words the shipped reference models read (the image one
#: is rendered and read back by tests/test_reference_models.py).
EXAMPLE_PROMPTS: dict[str, str] = {
    "image": "a red circle on a black background",
    "video": "a large yellow star moving from right to left on a white background",
    "music": "a slow ascending plucked string melody in G minor at 76 bpm",
    "speech": "The quick brown fox jumps over the lazy dog.",
}


def generate_tab(blocks: gr.Blocks, page: Page, modality: Modality, key: gr.Textbox) -> None:
    """Build the tab for ``modality`` inside the current ``gr.Tab``; ``key`` is the API key box."""
    limits = page.backend.settings.limits
    models = {m.name: m for m in page.backend.registry.available() if m.modality == modality}
    default = page.backend.registry.default_model(modality)
    default = default if default in models else next(iter(models))
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(label="Prompt", lines=2, max_lines=6, scale=5, elem_id=f"{modality}-prompt",
                            placeholder=EXAMPLE_PROMPTS[modality])
        with gr.Column(scale=1, min_width=140):
            go = gr.Button("Generate", variant="primary", elem_id=f"{modality}-generate")
            stop = gr.Button("Stop", variant="stop", elem_id=f"{modality}-stop")
    with gr.Row():
        model = gr.Dropdown(list(models), value=default, label="Model", scale=1)
        profile = gr.Dropdown(list(PROFILES), value="off", label="Acceleration profile", scale=1)
    with gr.Row():
        model_info = gr.Markdown(_model_md(models[default]))
        profile_info = gr.Markdown(page.profile_info("off"))
    d = models[default].defaults
    honoured = tab_fields(models.values())
    with gr.Accordion("Advanced parameters", open=False):
        fields: dict[str, Any] = {}
        if "negative_prompt" in honoured:
            fields["negative_prompt"] = gr.Textbox(label="Negative prompt", max_lines=3)
        fields.update({
            "steps": gr.Slider(0, limits.steps_max, value=0, step=1, label="Steps (0: the profile's or model's own)"),
            "guidance": _number_box(f"Guidance (0 to {limits.guidance_max:g})", d.guidance_scale,
                                    f"{modality}-guidance"),
            "seed": _number_box("Seed", None, f"{modality}-seed", empty="random"),
        })
        fields.update(_modality_fields(honoured, models, default, modality, limits))
    error = gr.HTML(elem_id=f"{modality}-error")
    progress = gr.HTML(elem_id=f"{modality}-progress")
    result = gr.HTML(elem_id=f"{modality}-result")
    timings = gr.Markdown()
    with gr.Row():
        rerun = gr.Button("Re-run with this seed", size="sm", elem_id=f"{modality}-rerun")
        vary = gr.Button("Vary seed", size="sm", elem_id=f"{modality}-vary")
    params = gr.Code("", language="json", label="Generation parameters (copy to re-use)", lines=4)
    current = gr.BrowserState("", storage_key=f"genaccel-job-{modality}")
    timer = gr.Timer(POLL_S, active=False)
    names = list(fields)
    shown = [progress, result, timings, params]

    def started(job: Job) -> tuple[Any, ...]:
        return ("", *page.show(job), job.id, gr.Timer(active=not job.done))

    def failed(exc: Exception) -> tuple[Any, ...]:
        return (render.error_html(message(exc)), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())

    def generate(api_key: str, text: str, model_name: str, profile_name: str, *values: Any) -> tuple[Any, ...]:
        flat: dict[str, Any] = {"modality": modality, "prompt": text or "", "model": model_name,
                                "profile": profile_name, **dict(zip(names, values, strict=True))}
        if not flat.get("steps"):
            flat["steps"] = None
        if not flat.get("init_image"):
            flat["strength"] = None
        try:
            for name in NUMBER_FIELDS & flat.keys():
                flat[name] = optional_number(name, flat[name], integer=name in INTEGER_FIELDS)
            upload = flat.pop("init_image", None)
            return started(page.jobs.submit(flat, page.jobs.owner(api_key), upload=upload))
        except FAILURES as exc:
            return failed(exc)

    def again(api_key: str, job_id: str, vary_seed: bool) -> tuple[Any, ...]:
        try:
            owner = page.jobs.owner(api_key)
            job = page.jobs.get(job_id, owner)
            return started(page.jobs.vary(job, owner) if vary_seed else page.jobs.rerun(job, owner))
        except FAILURES as exc:
            return failed(exc)

    def poll(api_key: str, job_id: str) -> tuple[Any, ...]:
        if not job_id:
            return (gr.skip(),) * len(shown) + (gr.Timer(active=False),)
        try:
            job = page.jobs.get(job_id, page.jobs.owner(api_key))
        except FAILURES:
            return ("", "", "", "", gr.Timer(active=False))
        return (*page.show(job), gr.Timer(active=not job.done))

    def cancel(api_key: str, job_id: str) -> tuple[Any, ...]:
        try:
            job = page.jobs.cancel(job_id, page.jobs.owner(api_key))
        except FAILURES as exc:
            return render.error_html(message(exc)), gr.skip(), gr.skip()
        return "", render.progress_html(job), gr.Timer(active=True)

    outs = [error, *shown, current, timer]
    inputs = [key, prompt, model, profile, *fields.values()]
    go.click(generate, inputs, outs, queue=False, api_visibility="private")
    prompt.submit(generate, inputs, outs, queue=False, api_visibility="private")
    rerun.click(lambda k, j: again(k, j, False), [key, current], outs, queue=False, api_visibility="private")
    vary.click(lambda k, j: again(k, j, True), [key, current], outs, queue=False, api_visibility="private")
    stop.click(cancel, [key, current], [error, progress, timer], queue=False, api_visibility="private")
    timer.tick(poll, [key, current], [*shown, timer], queue=False, api_visibility="private")
    profile.change(page.profile_info, profile, profile_info, queue=False, api_visibility="private")
    def pick_model(name: str) -> tuple[Any, ...]:
        info = models.get(name)
        if info is None:
            return ("",) + (gr.skip(),) * len(sized)
        d = info.defaults
        values = {"guidance": d.guidance_scale, "width": d.width, "height": d.height}
        return (_model_md(info), *(gr.Textbox(placeholder=f"empty: the model's: {values[n]:g}") for n in sized))

    sized = [n for n in ("guidance", "width", "height") if n in fields]
    model.change(pick_model, model, [model_info, *(fields[n] for n in sized)], queue=False, api_visibility="private")
    # after a reload: show the tab's last job again and follow it while it runs
    for trigger in (blocks.load, key.change):
        trigger(poll, [key, current], [*shown, timer], queue=False, api_visibility="private")
