"""``genaccel models`` and ``genaccel profiles``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from genaccel.commands.common import (
    _out,
    _quiet_libraries,
    app,
)
from genaccel.settings import Settings

if TYPE_CHECKING:
    pass



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
        size = f"{d.width}x{d.height}" if d.width else "-"
        if d.sample_rate:  # audio: rate and default length instead of a picture size
            size = f"{d.sample_rate / 1000:g}kHz" + (f" {d.duration_s:g}s" if d.duration_s else "")
        voices = f" (voices: {', '.join(d.voices)})" if d.voices else ""
        _out(f"{i.name:<24} {i.modality:<6} {i.family:<10} {i.source:<8} {size} {d.steps} steps  "
             f"{i.description}{voices}")


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
