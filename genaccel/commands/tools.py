"""Offline tools: ``genaccel bench``, ``distill``, ``calibrate`` and ``prune``."""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genaccel.commands.common import (
    Guidance,
    _err,
    _out,
    _quiet_libraries,
    app,
)
from genaccel.errors import GenAccelError, InvalidRequest
from genaccel.settings import Settings

if TYPE_CHECKING:
    pass



def _music_bench(data: dict[str, Any], overrides: dict[str, Any], prompts: int | None, json_out: Path | None) -> bool:
    """Music models have their own rows (``genaccel.bench.music``): run them when every model of
    the matrix makes music; refuse a matrix that mixes music with other modalities."""
    from genaccel.bench import music
    from pipelines.registry import ModelRegistry

    registry = ModelRegistry(Settings())
    modalities = {name: registry.resolve(name).modality for name in data["models"]}
    if "music" not in modalities.values():
        return False
    if set(modalities.values()) != {"music"}:
        raise InvalidRequest("models", ",".join(data["models"]), "mixes music models with other modalities",
                             "benchmark the music models in a run of their own")
    flags = {"steps": "--steps", "sizes": "--size", "batch": "--batch", "repeats": "--repeats", "warmup": "--warmup"}
    unused = [flag for key, flag in flags.items() if overrides.get(key)]
    if unused:
        raise InvalidRequest("options", " ".join(unused), "not used by music rows (each row runs at its own "
                             "steps, once per prompt)", "drop it; name the rows with --profiles")
    names = [p if isinstance(p, str) else p["name"] for p in data.get("profiles") or []] or list(music.ROWS)
    for name in data["models"]:
        results = music.bench(name, prompts or 12, names)
        out = json_out or Path("bench/results") / f"music-{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        music.write(results, out)
        _out(music.markdown(results))
        _err(f"genaccel: wrote {out} and {out.with_suffix('.md')}")
    return True


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
    if _music_bench(data, overrides, prompts, json_out):
        return
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
    mode: Annotated[str | None, typer.Option("--mode", help="lcm (few-step) or guidance (one pass instead of "
                                             "CFG's two) for image teachers; consistency for speech-ref and "
                                             "music-ref (the default for them).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch", help="Training batch size.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 2e-4,
    data: Annotated[int, typer.Option("--data", help="Reference-generator images to train on (speech: at most "
                                      "this many training sentences).")] = 4000,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="Train on teacher samples of these "
                                                      "prompts (one a line) instead.")] = None,
    work: Annotated[Path | None, typer.Option("--work", help="Checkpoints (resume by running again).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Distil a few-step (LCM) or guidance-free student from an SD-UNet, PixArt or Latte (video) teacher,
    or a 1-4 step consistency student of speech-ref's mel decoder or music-ref's mel DiT; it loads as a model
    name."""
    _quiet_libraries()
    import time as _time

    import torch

    from genaccel.training.common import training_progress, write_log
    from genaccel.training.distill import DistillConfig
    from genaccel.training.distill import distill as run_distill
    from pipelines.loader import load_pipeline, resolve_device
    from pipelines.registry import ModelRegistry

    if not 1 <= steps <= 1_000_000 or not 1 <= batch_size <= 1024:
        raise InvalidRequest("steps" if steps < 1 else "batch", steps if steps < 1 else batch_size,
                             "must be positive", "pass --steps and --batch of at least 1")
    settings = Settings()
    registry = ModelRegistry(settings)
    info = registry.resolve(teacher)
    student = {"SpeechRefModel": _distill_speech, "MelDiTPipeline": _distill_music}.get(info.pipeline_class)
    if student is not None:
        student(info, out, mode, steps, batch_size, lr, data, prompts_file, work, seed, settings)
        return
    mode = mode or "lcm"
    if mode not in ("lcm", "guidance"):
        raise InvalidRequest("mode", mode, "no such distillation mode for image teachers",
                             "use --mode lcm or --mode guidance")
    prompts = None
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise GenAccelError(f"--prompts {prompts_file} does not exist; fix: pass a text file, one prompt a line")
        prompts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
        if not prompts:
            raise GenAccelError(f"--prompts {prompts_file} holds no prompt; fix: one prompt a line")
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


def _distill_speech(info: Any, out: Path | None, mode: str | None, steps: int, batch_size: int, lr: float,
                    data: int, prompts_file: Path | None, work: Path | None, seed: int, settings: Settings) -> None:
    """``genaccel distill`` for a speech-ref teacher: consistency distillation of its mel decoder."""
    from genaccel.training.speech_distill import SpeechDistillConfig, distill_speech

    _consistency_only(info, mode, prompts_file, "is a flow-matching speech model: it has no guidance to distil",
                      "distils on espeak-ng renderings of its training sentences")
    model = info.builder()
    if model.cfg.sampler != "euler":
        raise InvalidRequest("teacher", info.name, "is already a consistency student",
                             "distil from the flow-matching model it came from")
    config = SpeechDistillConfig(steps=steps, batch=batch_size, lr=lr, seed=seed)
    _student_run(info, out, work, settings, lambda o, w, p: distill_speech(model, info.name, o, w, config, data=data,
                                                                          progress=p),
                 "genaccel render TEXT --modality speech --model {name}")


def _distill_music(info: Any, out: Path | None, mode: str | None, steps: int, batch_size: int, lr: float,
                   data: int, prompts_file: Path | None, work: Path | None, seed: int, settings: Settings) -> None:
    """``genaccel distill`` for a mel-DiT music teacher (music-ref): consistency distillation with
    its guidance baked in."""
    import torch

    from genaccel.training.music_distill import MusicDistillConfig, distill_music

    _consistency_only(info, mode, prompts_file, "is an EDM music model whose student is a consistency model",
                      "distils on the synthesiser's clips")
    teacher = info.builder().to(torch.float32)
    if teacher.is_consistency_student:
        raise InvalidRequest("teacher", info.name, "is already a consistency student",
                             "distil from the EDM model it came from")
    config = MusicDistillConfig(steps=steps, batch=batch_size, lr=lr, seed=seed,
                                guidance=info.defaults.guidance_scale or 1.0)
    _student_run(info, out, work, settings, lambda o, w, p: distill_music(teacher, info.name, o, w, config, data=data,
                                                                         progress=p),
                 "genaccel render PROMPT --modality music --model {name}")


def _consistency_only(info: Any, mode: str | None, prompts_file: Path | None, why: str, data: str) -> None:
    if mode not in (None, "consistency"):
        raise InvalidRequest("mode", mode, f"{info.name} {why}", "use --mode consistency (the default)")
    if prompts_file is not None:
        raise InvalidRequest("prompts", str(prompts_file), f"{info.name} {data}, not on prompts", "drop --prompts")


def _student_run(info: Any, out: Path | None, work: Path | None, settings: Settings,
                 train: Callable[[Path, Path, Any], list[float]], render_hint: str) -> None:
    """Train a consistency student of ``info`` into ``out`` (default GENACCEL_HOME/models/NAME-consistency)."""
    from genaccel.training.common import training_progress, write_log

    name = f"{info.name}-consistency"
    out = out or settings.home / "models" / name
    work = work or Path("runs") / f"distill-{name}"
    started = time.time()
    progress, close = training_progress()
    losses = train(out, work, progress("consistency"))
    close()
    write_log(out / "train_log.json", started, teacher=info.name, final_loss=losses[-1] if losses else None)
    _out(str(out))
    _err(f"genaccel: student saved; it loads as {out.name}: {render_hint.format(name=out.name)} "
         f"(or --profile turbo with {info.name})")


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
    model: Annotated[str, typer.Option("--model", help="SD-UNet or PixArt-DiT model to prune (name or folder).")],
    ratio: Annotated[float, typer.Option("--ratio", help="Share of denoiser parameters to remove (0..1).")] = 0.3,
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
                                               "up_blocks.2.attentions or transformer_blocks.3); --ratio is "
                                               "then ignored.")] = None,
) -> None:
    """Remove the UNet blocks or DiT transformer blocks that change the output least (LD-Pruner
    ranking) down to a ratio, optionally recover by distillation, and save a smaller model that
    loads by name."""
    _quiet_libraries()
    import time as _time

    import torch

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
                       remove=[u.strip() for u in remove.split(",") if u.strip()] if remove else None,
                       defaults={k: getattr(info.defaults, k) for k in ("steps", "guidance_scale", "width", "height")})
    close()
    write_log(out / "train_log.json", started, teacher=info.name, ratio=ratio, removed=chosen.removed,
              recover_steps=recover_steps, batch=batch_size, lr=lr, remove_given=bool(remove))
    _out(str(out))
    _err(f"genaccel: removed {', '.join(chosen.removed)} ({chosen.ratio:.1%} of {chosen.params_before:,} denoiser "
         f"parameters); render it with: genaccel render PROMPT --model {out}")
