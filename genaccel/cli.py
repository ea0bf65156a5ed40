"""``genaccel`` command line: the composition root (imports pipelines and services lazily).

User mistakes print one line ``genaccel: error: ...`` on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from genaccel.errors import GenAccelError
from genaccel.settings import Settings

if TYPE_CHECKING:
    from genaccel.spec import Job
    from genaccel.store.base import Store
    from pipelines.engine import LocalEngine

app = typer.Typer(
    name="genaccel", help="Fast generative media: render images (video, speech, music to come) as jobs.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
jobs_app = typer.Typer(help="Inspect and cancel jobs in the configured store (Redis with GENACCEL_REDIS_URL or "
                       "--redis, else the local SQLite file).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.basicConfig(level=logging.WARNING, format="genaccel: %(levelname)s: %(message)s")


def _engine(settings: Settings) -> LocalEngine:
    _quiet_libraries()
    from pipelines.engine import LocalEngine

    return LocalEngine(settings, scoped=True)


def _out(text: str) -> None:
    typer.echo(text)


def _err(text: str) -> None:
    typer.echo(text, err=True)


# Options shared by render and batch (their values become flat request keys).
Model = Annotated[str | None, typer.Option("--model", "-m", help="Model name, folder or cached hub id.")]
Profile = Annotated[str | None, typer.Option("--profile", "-p", help="Acceleration profile (see `profiles`).")]
Steps = Annotated[int | None, typer.Option("--steps", help="Denoising steps (1..200).")]
Guidance = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale (0..30).")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed (0..2^32-1); random when omitted.")]
Width = Annotated[int | None, typer.Option("--width", help="Width in px, multiple of 8.")]
Height = Annotated[int | None, typer.Option("--height", help="Height in px, multiple of 8.")]
Negative = Annotated[str | None, typer.Option("--negative", help="Negative prompt.")]
NumOutputs = Annotated[int | None, typer.Option("--num-outputs", "-n", help="Outputs per request (1..8).")]
Modality = Annotated[str | None, typer.Option("--modality", help="image | video | speech | music.")]
Frames = Annotated[int | None, typer.Option("--frames", help="Video frames.")]
Fps = Annotated[float | None, typer.Option("--fps", help="Video frames per second.")]
Duration = Annotated[float | None, typer.Option("--duration", help="Audio length in seconds.")]
Voice = Annotated[str | None, typer.Option("--voice", help="Speech voice (see `genaccel models`).")]
Speed = Annotated[float | None, typer.Option("--speed", help="Speech rate, 1 = the voice's own.")]
Format = Annotated[str | None, typer.Option("--format", help="Output file format: png; mp4, webm, gif; "
                                            "wav, flac, mp3, ogg (the model's default when omitted).")]
Priority = Annotated[int | None, typer.Option("--priority", help="0..9, higher runs sooner.")]
Technique = Annotated[list[str] | None, typer.Option("--technique", "-t", help="NAME or NAME:key=value,... "
                                                     "(repeatable), e.g. deepcache:interval=3")]


def parse_technique_option(text: str) -> dict[str, Any]:
    """``deepcache:interval=3,branch=0`` -> ``{"name": "deepcache", "options": {...}}``."""
    name, _, rest = text.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise GenAccelError(f"--technique {text!r} is invalid: {item!r} is not key=value; "
                                "fix: write e.g. deepcache:interval=3,branch=0")
        options[key.strip()] = json.loads(value) if value.strip().lstrip("-").replace(".", "", 1).isdigit() \
            else value.strip()
    return {"name": name.strip(), "options": options}


def _flat(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


@app.command()
def render(
    prompt: Annotated[str | None, typer.Argument(help="What to generate.")] = None,
    modality: Modality = None, model: Model = None, profile: Profile = None, steps: Steps = None,
    guidance: Guidance = None, seed: Seed = None, width: Width = None, height: Height = None,
    negative: Negative = None, num_outputs: NumOutputs = None, frames: Frames = None, fps: Fps = None,
    duration: Duration = None, voice: Voice = None, speed: Speed = None, output_format: Format = None,
    priority: Priority = None, technique: Technique = None,
    init: Annotated[Path | None, typer.Option("--init", help="Init image for image-to-image.")] = None,
    strength: Annotated[float | None, typer.Option("--strength", help="img2img strength (0..1].")] = None,
    from_file: Annotated[Path | None, typer.Option("--from", help="Re-run the request stored in an artifact (PNG, "
                                                   "MP4, WAV, FLAC... or its JSON sidecar).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("outputs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished job as JSON.")] = False,
) -> None:
    """Render one request and print where its files are."""
    from genaccel.spec import JobRequest, validate_request

    options = _flat(modality=modality, model=model, profile=profile, steps=steps, guidance=guidance, seed=seed,
                    width=width, height=height, negative=negative, num_outputs=num_outputs, frames=frames, fps=fps,
                    duration=duration, voice=voice, speed=speed, output_format=output_format, priority=priority,
                    init=str(init) if init else None, strength=strength,
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
        job = engine.submit(request, output_dir=out)
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
    priority: Priority = None, technique: Technique = None,
) -> None:
    """Render every line of FILE; command-line options are defaults for keys a line leaves out."""
    from genaccel.batch import run_batch

    defaults = _flat(modality=modality, model=model, profile=profile, steps=steps, guidance=guidance, seed=seed,
                     width=width, height=height, negative=negative, num_outputs=num_outputs, frames=frames, fps=fps,
                     duration=duration, voice=voice, speed=speed, output_format=output_format, priority=priority,
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


RedisUrl = Annotated[str | None, typer.Option("--redis", help="Redis URL of the job store (default: "
                                               "GENACCEL_REDIS_URL; without either, the local SQLite file).")]


def _job_store(redis: str | None) -> Store:
    """The store `genaccel serve` and the workers use: Redis when configured, else SQLite."""
    settings = Settings(redis_url=redis) if redis else Settings()
    if settings.redis_url:
        from genaccel.store.redis import redis_store

        return redis_store(settings)
    from genaccel.store.sqlite import SQLiteStore

    return SQLiteStore(settings.database)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option(help="queued | running | succeeded | failed | cancelled")] = None,
    modality: Modality = None,
    limit: Annotated[int, typer.Option(help="Jobs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Cursor printed by the previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    redis: RedisUrl = None,
) -> None:
    """List jobs, newest first."""
    from genaccel.spec import MODALITIES

    states = ("queued", "running", "succeeded", "failed", "cancelled")
    if state is not None and state not in states:
        raise GenAccelError(f"--state={state!r} is invalid: no such state; fix: use one of {', '.join(states)}")
    if modality is not None and modality not in MODALITIES:
        raise GenAccelError(f"--modality={modality!r} is invalid; fix: use one of {', '.join(MODALITIES)}")
    store = _job_store(redis)
    try:
        page = store.list_jobs(state=state, modality=modality, limit=limit, cursor=cursor)  # type: ignore[arg-type]
    finally:
        store.close()
    if as_json:
        _out(json.dumps({"jobs": [j.model_dump(mode="json") for j in page.jobs], "next_cursor": page.next_cursor}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "state", "modality", "model", "progress", "prompt")
    for j in page.jobs:
        table.add_row(j.id, j.state, j.request.modality, j.request.model or "",
                      f"{j.progress.step}/{j.progress.total}", j.request.prompt[:40])
    Console().print(table)
    if page.next_cursor:
        _out(f"more: genaccel jobs list --cursor {page.next_cursor}")


@jobs_app.command("show")
def jobs_show(job_id: str, redis: RedisUrl = None) -> None:
    """Print one job as JSON."""
    store = _job_store(redis)
    try:
        _out(store.get(job_id).model_dump_json(indent=2))
    finally:
        store.close()


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, redis: RedisUrl = None) -> None:
    """Cancel a job: a queued job never starts; a running one stops at its next step."""
    store = _job_store(redis)
    try:
        job = store.cancel(job_id)
    finally:
        store.close()
    _out(f"{job.id}: {'cancelled' if job.state == 'cancelled' else 'stopping at its next step'}")


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the models this machine can serve offline."""
    _quiet_libraries()
    from pipelines.registry import ModelRegistry

    infos = ModelRegistry(Settings()).available()
    if as_json:
        _out(json.dumps([{"name": i.name, "modality": i.modality, "family": i.family, "source": i.source,
                          "location": i.location, "pipeline": i.pipeline_class,
                          "defaults": vars(i.defaults), "description": i.description} for i in infos], indent=2))
        return
    for i in infos:
        d = i.defaults
        _out(f"{i.name:<24} {i.modality:<6} {i.family:<10} {i.source:<8} {d.width}x{d.height} {d.steps} steps  "
             f"{i.description}")


@app.command()
def bench(
    matrix: Annotated[Path | None, typer.Option("--matrix", help="YAML/JSON matrix (see bench/README.md).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model (repeatable).")] = None,
    profiles: Annotated[str | None, typer.Option("--profiles", help="Comma list; the first is the baseline.")] = None,
    steps: Annotated[list[int] | None, typer.Option("--steps", help="Step count (repeatable).")] = None,
    size: Annotated[list[str] | None, typer.Option("--size", help="WIDTHxHEIGHT (repeatable).")] = None,
    batch_size: Annotated[list[int] | None, typer.Option("--batch", help="Images per call (repeatable).")] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", help="Timed runs per row.")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Untimed runs per row.")] = None,
    prompts: Annotated[int | None, typer.Option("--prompts", help="Held-out prompts for quality.")] = None,
    no_quality: Annotated[bool, typer.Option("--no-quality", help="Speed only.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Where the JSON goes (.md and .png beside it).")]
    = None,
) -> None:
    """Benchmark a matrix of models x profiles x steps x sizes x batch sizes side by side."""
    _quiet_libraries()
    from genaccel.bench.matrix import load_matrix, parse_matrix
    from genaccel.bench.report import markdown_table, write_outputs
    from genaccel.bench.run import run_matrix

    if matrix is None and not model:
        matrix = Path(__file__).resolve().parents[1] / "bench" / "default.yaml"
    data: dict[str, Any] = load_matrix(matrix).model_dump() if matrix else {"models": model}
    overrides = {"models": model, "profiles": profiles.split(",") if profiles else None, "steps": steps,
                 "sizes": size, "batch": batch_size, "repeats": repeats, "warmup": warmup}
    data.update({k: v for k, v in overrides.items() if v})
    if prompts is not None or no_quality:
        data["quality"] = {**data.get("quality", {}), **({"prompts": prompts} if prompts else {}),
                           **({"enabled": False} if no_quality else {})}
    spec = parse_matrix(data, source=matrix.name if matrix else "options")
    out = json_out or Path("bench/results") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    command = " ".join(["genaccel", *sys.argv[1:]])
    result = run_matrix(spec, Settings(), command=command, progress=_err)
    write_outputs(result, out, out.with_suffix(".md"), out.with_suffix(".png"))
    _out(markdown_table(result["rows"]))
    _err(f"genaccel: wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


@app.command()
def distill(
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher model (name, folder or cached hub id).")],
    out: Annotated[Path | None, typer.Option("--out", help="Student folder (default: GENACCEL_HOME/models/NAME).")]
    = None,
    mode: Annotated[str, typer.Option("--mode", help="lcm (few-step) or guidance (one pass instead of CFG's two).")]
    = "lcm",
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch", help="Training batch size.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 2e-4,
    data: Annotated[int, typer.Option("--data", help="Reference-generator images to train on.")] = 4000,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="Train on teacher samples of these "
                                                      "prompts (one a line) instead.")] = None,
    work: Annotated[Path | None, typer.Option("--work", help="Checkpoints (resume by running again).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Distil a few-step (LCM) or guidance-free student from an SD-UNet or PixArt teacher; it loads as a
    model name."""
    _quiet_libraries()
    import time as _time

    import torch

    from genaccel.errors import InvalidRequest
    from genaccel.training.common import training_progress, write_log
    from genaccel.training.distill import DistillConfig
    from genaccel.training.distill import distill as run_distill
    from pipelines.loader import load_pipeline, resolve_device
    from pipelines.registry import ModelRegistry

    if mode not in ("lcm", "guidance"):
        raise InvalidRequest("mode", mode, "no such distillation mode", "use --mode lcm or --mode guidance")
    if not 1 <= steps <= 1_000_000 or not 1 <= batch_size <= 1024:
        raise InvalidRequest("steps" if steps < 1 else "batch", steps if steps < 1 else batch_size,
                             "must be positive", "pass --steps and --batch of at least 1")
    prompts = None
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise GenAccelError(f"--prompts {prompts_file} does not exist; fix: pass a text file, one prompt a line")
        prompts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
        if not prompts:
            raise GenAccelError(f"--prompts {prompts_file} holds no prompt; fix: one prompt a line")
    settings = Settings()
    registry = ModelRegistry(settings)
    info = registry.resolve(teacher)
    name = f"{info.name.replace('/', '--')}-{mode}"
    out = out or settings.home / "models" / name
    work = work or Path("runs") / f"distill-{name}"
    device = resolve_device(settings.device)
    pipe = load_pipeline(info, device, torch.float32)  # train in fp32; the student is saved in fp16
    config = DistillConfig(mode=mode, steps=steps, batch=batch_size, lr=lr, seed=seed,  # type: ignore[arg-type]
                           guidance_default=info.defaults.guidance_scale)
    started = _time.time()
    progress, close = training_progress()
    losses = run_distill(pipe, info.name, out, work, config, data=data, prompts=prompts, progress=progress)
    close()
    write_log(out / "train_log.json", started, teacher=info.name, final_loss=losses[-1] if losses else None)
    _out(str(out))
    _err(f"genaccel: student saved; render it with: genaccel render PROMPT --model {out}")


@app.command()
def calibrate(
    model: Annotated[str, typer.Option("--model", help="DiT model to calibrate (name or folder).")],
    steps: Annotated[int, typer.Option("--steps", help="Steps of the calibration runs.")] = 50,
    prompts: Annotated[int, typer.Option("--prompts", help="Prompts averaged over.")] = 8,
    guidance: Guidance = None,
) -> None:
    """Measure the per-model curve MagCache needs (residual-magnitude ratios between steps) and
    store it where the `magcache` technique finds it."""
    _quiet_libraries()
    import torch

    from genaccel.accel.calibration import measure_magcache_ratios, save_magcache_ratios
    from genaccel.errors import InvalidRequest
    from genaccel.families import DITS
    from genaccel.refdata.shapes import sample_specs
    from pipelines.loader import load_pipeline, resolve_device
    from pipelines.registry import ModelRegistry

    if not 2 <= steps <= 200 or not 1 <= prompts <= 64:
        raise InvalidRequest("steps" if not 2 <= steps <= 200 else "prompts", steps if not 2 <= steps <= 200
                             else prompts, "is out of range", "pass --steps 2..200 and --prompts 1..64")
    settings = Settings()
    info = ModelRegistry(settings).resolve(model)
    if info.source == "builtin" or info.family not in DITS:
        raise InvalidRequest("model", info.name, "calibration is for DiT models loaded from a folder",
                             "pick a DiT pipeline folder such as shapes-dit")
    pipe = load_pipeline(info, resolve_device(settings.device), torch.float32)
    captions = [s.caption() for s in sample_specs(prompts, 4321, split="train")]
    call: dict[str, Any] = {
        "guidance_scale": guidance if guidance is not None else info.defaults.guidance_scale,
        "height": info.defaults.height, "width": info.defaults.width,
    }
    if "use_resolution_binning" in inspect.signature(pipe.__call__).parameters:
        call["use_resolution_binning"] = False
    ratios = measure_magcache_ratios(pipe, captions, steps, **call)
    path = save_magcache_ratios(settings, Path(info.location), ratios, steps)
    _out(json.dumps({"model": info.name, "steps": steps, "ratios": [round(r, 5) for r in ratios]}))
    _err(f"genaccel: MagCache ratios for {info.name} saved to {path}")


@app.command()
def prune(
    model: Annotated[str, typer.Option("--model", help="SD-architecture model to prune (name or folder).")],
    ratio: Annotated[float, typer.Option("--ratio", help="Share of UNet parameters to remove (0..1).")] = 0.3,
    out: Annotated[Path | None, typer.Option("--out", help="Pruned model folder (default: "
                                             "GENACCEL_HOME/models/NAME-pruned).")] = None,
    recover_steps: Annotated[int, typer.Option("--recover-steps", help="Distillation steps from the unpruned "
                                               "teacher after pruning (0: none).")] = 0,
    calibration: Annotated[int, typer.Option("--calibration", help="Calibration images for the ranking.")] = 64,
    batch_size: Annotated[int, typer.Option("--batch", help="Recovery batch size (each sample runs with and "
                                            "without its caption).")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Recovery learning rate.")] = 1e-4,
    work: Annotated[Path | None, typer.Option("--work", help="Recovery checkpoints (resume by running "
                                              "again).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    remove: Annotated[str | None, typer.Option("--remove", help="Remove exactly these units instead of the "
                                               "ranking's choice (comma-separated, e.g. mid_block,"
                                               "up_blocks.2.attentions); --ratio is then ignored.")] = None,
) -> None:
    """Remove the UNet blocks that change the output least (LD-Pruner ranking) down to a ratio,
    optionally recover by distillation, and save a smaller model that loads by name."""
    _quiet_libraries()
    import time as _time

    import torch

    from genaccel.errors import InvalidRequest
    from genaccel.training.common import training_progress, write_log
    from genaccel.training.prune import prune as run_prune
    from pipelines.loader import load_pipeline, resolve_device
    from pipelines.registry import ModelRegistry

    if not 0 < ratio < 1:
        raise InvalidRequest("ratio", ratio, "must be between 0 and 1", "pass e.g. --ratio 0.3")
    if recover_steps < 0 or not 8 <= calibration <= 4096:
        raise InvalidRequest("recover_steps" if recover_steps < 0 else "calibration",
                             recover_steps if recover_steps < 0 else calibration, "is out of range",
                             "pass --recover-steps 0 or more and --calibration between 8 and 4096")
    settings = Settings()
    info = ModelRegistry(settings).resolve(model)
    name = f"{info.name.replace('/', '--')}-pruned"
    out = out or settings.home / "models" / name
    work = work or Path("runs") / f"prune-{name}"
    pipe = load_pipeline(info, resolve_device(settings.device), torch.float32)
    started = _time.time()
    progress, close = training_progress()
    chosen = run_prune(pipe, info.name, out, work, ratio=ratio, calibration=calibration, recover_steps=recover_steps,
                       batch=batch_size, lr=lr, seed=seed, progress=progress,
                       remove=[u.strip() for u in remove.split(",") if u.strip()] if remove else None)
    close()
    write_log(out / "train_log.json", started, teacher=info.name, ratio=ratio, removed=chosen.removed,
              recover_steps=recover_steps, batch=batch_size, lr=lr, remove_given=bool(remove))
    _out(str(out))
    _err(f"genaccel: removed {', '.join(chosen.removed)} ({chosen.ratio:.1%} of {chosen.params_before:,} UNet "
         f"parameters); render it with: genaccel render PROMPT --model {out}")


keys_app = typer.Typer(help="API keys for `genaccel serve`.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new() -> None:
    """Print a new API key and the digest to add to GENACCEL_API_KEYS (only the digest is stored)."""
    from genaccel.service.auth import new_key

    key, digest = new_key()
    _out(f"key:    {key}\ndigest: {digest}")
    _err("genaccel: give the key to its user; put the digest in GENACCEL_API_KEYS (a JSON list) on the server")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1; 0.0.0.0 "
                                                  "only with API keys configured).")] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL: store jobs in Redis and run them "
                                                               "on Celery workers (`genaccel worker`).")] = None,
    workers: Annotated[int | None, typer.Option(help="Embedded worker threads (without --redis).")] = None,
    grace: Annotated[float, typer.Option(help="Seconds running jobs get to finish on shutdown before they "
                                              "go back to the queue.")] = 30.0,
) -> None:
    """Run the REST API (and an embedded worker unless --redis is given)."""
    _quiet_libraries()
    logging.getLogger("genaccel").setLevel(logging.INFO)
    from genaccel.serve import run_server

    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["workers"] = workers
    if redis:
        overrides["redis_url"] = redis
    settings = Settings(**overrides)
    if host is None:
        host = "127.0.0.1"
    elif host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        raise GenAccelError(f"--host {host} would expose the API without keys; fix: set GENACCEL_API_KEYS "
                            "(see `genaccel keys new`) or listen on 127.0.0.1")
    run_server(settings, host, port, grace_s=grace, log=_err)


@app.command()
def worker(
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL (default: GENACCEL_REDIS_URL).")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="cpu, cpu:1, cuda:0, ... (repeatable; one "
                                                                       "worker process each; a device already "
                                                                       "served on this host is refused).")] = None,
    queues: Annotated[str, typer.Option("--queues", help="Comma-separated Celery queues: modalities "
                                                          "(image, video, ...) or routes' names.")] = "image",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run Celery workers for `genaccel serve --redis`: one process per device, one job at a time each;
    they end with this process, however it ends."""
    from workers.main import launch

    url = redis or Settings().redis_url
    if not url:
        raise GenAccelError("no Redis URL; fix: pass --redis redis://HOST:6379/0 or set GENACCEL_REDIS_URL")
    devices = device or [_default_device()]
    raise typer.Exit(launch(url, devices, [q.strip() for q in queues.split(",") if q.strip()], loglevel))


def _default_device() -> str:
    """cuda:0 when the driver reports a GPU (asked of nvidia-smi, so the launcher never initialises
    CUDA itself), else cpu."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        if found.strip():
            return "cuda:0"
    return "cpu"


@app.command()
def profiles() -> None:
    """List acceleration profiles and what each does."""
    from genaccel.profiles import PROFILES, measured_speedups

    measured = measured_speedups()
    for p in PROFILES.values():
        _out(f"{p.name:<10} {p.description}")
        for family, recipe in p.recipes.items():
            used = ", ".join(f"{t.name}({', '.join(f'{k}={v}' for k, v in t.options.items())})"
                             for t in recipe.techniques)
            steps = f", {recipe.steps} steps" if recipe.steps else ""
            _out(f"{'':<10}   {family}: {used}{steps}")
        if measured.get(p.name):
            speed = ", ".join(f"{model} {x:.2f}x" for model, x in measured[p.name].items())
            _out(f"{'':<10}   measured end-to-end speed-up against off: {speed}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns errors into one line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
    except GenAccelError as exc:
        _err(f"genaccel: error: {exc.message}")
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        _err("genaccel: aborted")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
