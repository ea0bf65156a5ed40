"""What every command shares: the typer apps, output helpers and the request options."""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genaccel.errors import GenAccelError
from genaccel.settings import Settings

if TYPE_CHECKING:
    from pipelines.engine import LocalEngine

app = typer.Typer(
    name="genaccel", help="Fast generative media: images, video, speech and music rendered as jobs.",
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
Loudness = Annotated[float | None, typer.Option("--loudness", help="Audio: normalise to this loudness (LUFS, "
                                                "e.g. -14).")]
Fade = Annotated[float | None, typer.Option("--fade", help="Audio: fade in and out over this many seconds.")]
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

