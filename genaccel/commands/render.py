"""``genaccel render`` and ``genaccel batch``: requests run on the embedded engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genaccel.commands.common import (
    Duration,
    Fade,
    Format,
    Fps,
    Frames,
    Guidance,
    Height,
    Loudness,
    Modality,
    Model,
    Negative,
    NumOutputs,
    Priority,
    Profile,
    Seed,
    Speed,
    Steps,
    Technique,
    Voice,
    Width,
    _engine,
    _err,
    _flat,
    _out,
    app,
    parse_technique_option,
)
from genaccel.errors import GenAccelError
from genaccel.settings import Settings

if TYPE_CHECKING:
    from genaccel.spec import Job
    from pipelines.engine import LocalEngine



@app.command()
def render(
    prompt: Annotated[str | None, typer.Argument(help="What to generate.")] = None,
    modality: Modality = None, model: Model = None, profile: Profile = None, steps: Steps = None,
    guidance: Guidance = None, seed: Seed = None, width: Width = None, height: Height = None,
    negative: Negative = None, num_outputs: NumOutputs = None, frames: Frames = None, fps: Fps = None,
    duration: Duration = None, voice: Voice = None, speed: Speed = None, output_format: Format = None,
    priority: Priority = None, technique: Technique = None, loudness: Loudness = None, fade: Fade = None,
    init: Annotated[Path | None, typer.Option("--init", help="Init image for image-to-image.")] = None,
    strength: Annotated[float | None, typer.Option("--strength", help="img2img strength (0..1].")] = None,
    from_file: Annotated[Path | None, typer.Option("--from", help="Re-run the request stored in an artifact (PNG, "
                                                   "MP4, WAV, FLAC... or its JSON sidecar).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("outputs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished job as JSON.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run the pipeline even when an identical request "
                                           "already succeeded (the result cache).")] = False,
) -> None:
    """Render one request and print where its files are."""
    from genaccel.spec import JobRequest, validate_request

    options = _flat(modality=modality, model=model, profile=profile, steps=steps, guidance=guidance, seed=seed,
                    width=width, height=height, negative=negative, num_outputs=num_outputs, frames=frames, fps=fps,
                    duration=duration, voice=voice, speed=speed, output_format=output_format, priority=priority,
                    init=str(init) if init else None, strength=strength, cache=False if no_cache else None,
                    loudness=loudness, fade=fade,
                    techniques=[parse_technique_option(t) for t in technique] if technique else None)
    if from_file is not None:
        from genaccel.artifacts import request_from_artifact

        base = request_from_artifact(from_file).flat()
        request = JobRequest.from_flat({**base, **options, **({"prompt": prompt} if prompt else {})})
    elif prompt is None:
        raise GenAccelError("prompt is missing; fix: pass a PROMPT argument or --from FILE (a genaccel artifact)")
    else:
        request = JobRequest.from_flat({"prompt": prompt, **options})
    settings = Settings()
    validate_request(request, settings.limits)  # fail fast, before the heavy imports
    with _engine(settings) as engine:
        from genaccel.service import Backend, JobService

        service = JobService(Backend(settings, engine.store, engine.dispatcher, engine.registry))
        job = service.enqueue(request, None, output_dir=out)
        try:
            done = _wait_with_progress(engine, [job.id], label=request.prompt[:40])[0]
        except KeyboardInterrupt:
            engine.store.cancel(job.id)
            _err(f"genaccel: cancelled job {job.id}")
            raise typer.Exit(130) from None
    if as_json:
        _out(done.model_dump_json(indent=2))
    elif done.state == "succeeded":
        for artifact in done.artifacts:
            _out(artifact.path)
    if done.state != "succeeded":
        message = done.error.message if done.error else done.state
        _err(f"genaccel: job {done.id} {done.state}: {message}")
        raise typer.Exit(1)


def _wait_with_progress(engine: LocalEngine, ids: list[str], label: str) -> list[Job]:
    if not sys.stderr.isatty():
        return engine.wait(ids)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(job: Job) -> None:
            if job.progress.total:
                bar.update(task, completed=job.progress.step, total=job.progress.total)

        return engine.wait(ids, on_update=update)


@app.command()
def batch(
    file: Annotated[Path, typer.Argument(help="JSONL (one JSON object a line) or CSV with a header row.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (holds manifest.jsonl).")],
    resume: Annotated[bool, typer.Option("--resume", help="Skip lines already done in --out.")] = False,
    modality: Modality = None, model: Model = None, profile: Profile = None, steps: Steps = None,
    guidance: Guidance = None, seed: Seed = None, width: Width = None, height: Height = None,
    negative: Negative = None, num_outputs: NumOutputs = None, frames: Frames = None, fps: Fps = None,
    duration: Duration = None, voice: Voice = None, speed: Speed = None, output_format: Format = None,
    priority: Priority = None, technique: Technique = None, loudness: Loudness = None, fade: Fade = None,
) -> None:
    """Render every line of FILE; command-line options are defaults for keys a line leaves out."""
    from genaccel.batch import run_batch

    defaults = _flat(modality=modality, model=model, profile=profile, steps=steps, guidance=guidance, seed=seed,
                     width=width, height=height, negative=negative, num_outputs=num_outputs, frames=frames, fps=fps,
                     duration=duration, voice=voice, speed=speed, output_format=output_format, priority=priority,
                     loudness=loudness, fade=fade,
                     techniques=[parse_technique_option(t) for t in technique] if technique else None)
    settings = Settings()
    tty = sys.stderr.isatty()
    with _engine(settings) as engine:
        try:
            if tty:
                result = _batch_with_bar(engine, file, out, defaults, resume)
            else:
                result = run_batch(engine, file, out, defaults, resume=resume, report=_err)
        except KeyboardInterrupt:
            _err(f"genaccel: interrupted; run again with --resume to finish ({out / 'manifest.jsonl'})")
            os._exit(130)  # worker threads hold the running job; resume re-queues it
    _err(f"genaccel: {result.succeeded} rendered, {result.skipped} already done, {len(result.failed)} failed "
         f"of {result.total} lines; manifest: {out / 'manifest.jsonl'}")
    if not result.ok:
        raise typer.Exit(1)


def _batch_with_bar(engine: LocalEngine, file: Path, out: Path, defaults: dict[str, Any], resume: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from genaccel.batch import run_batch

    console = Console(stderr=True)
    with Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("batch", total=None)
        return run_batch(
            engine, file, out, defaults, resume=resume, report=lambda s: bar.console.print(s, highlight=False),
            on_start=lambda n: bar.update(task, total=n),
            on_update=lambda job: bar.advance(task) if job.done else None,
        )
