"""Music benchmark: every acceleration profile and every DiT cache on a music model, side by side
in one process, through the job path's own pieces (``prepare_request``, the profile's techniques,
``MusicAdapter.generate``):

* wall seconds per clip, seconds inside the denoiser, and the real-time factor (compute seconds
  per second of audio);
* exact match (every attribute a prompt names read back by ``genaccel.metrics.music``) and note
  accuracy on synthesiser captions, half full and half natural variants;
* log-spectral distance of each row's clips against the ``off`` row's at the same seeds;
* Fréchet distance, in the timbre classifier's (standardised) feature space, between each row's
  clips and the synthesiser's own renderings of the same captions (the data the model learnt).

A row is a name of ``ROWS``, a profile, or a technique with its default options. ``genaccel
bench --model music-ref --profiles off,turbo,taylorseer`` runs this benchmark for music models.

    python -m genaccel.bench.music --model music-ref --prompts 12 --out bench/results/music.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genaccel.accel import apply_techniques, technique_names
from genaccel.bench.measure import DenoiserCounter
from genaccel.errors import InvalidRequest
from genaccel.metrics.music import MusicEvaluator, frechet_distance, log_spectral_distance
from genaccel.profiles import PROFILES
from genaccel.refdata.music import CLIP_SECONDS, SAMPLE_RATE, MelodySpec, caption_variant, random_spec, render
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.loader import load_pipeline
from pipelines.modality import AudioOutput, RunHooks
from pipelines.music import MusicAdapter
from pipelines.prepare import prepare_request, technique_configs
from pipelines.registry import ModelRegistry

ROWS: dict[str, tuple[str, tuple[TechniqueSpec, ...], int | None]] = {  # profile, techniques, steps (None: its own)
    "off": ("off", (), None),
    "balanced": ("balanced", (), None),
    "fast": ("fast", (), None),
    "max": ("max", (), None),
    "turbo": ("turbo", (), None),  # the consistency student (its own steps), where the model has one
    "turbo-2": ("turbo", (), 2),
    "turbo-1": ("turbo", (), 1),
    "fbcache": ("off", (TechniqueSpec(name="fbcache"),), None),
    "pab": ("off", (TechniqueSpec(name="pab"),), None),
    "fastercache": ("off", (TechniqueSpec(name="fastercache"),), None),
    "taylorseer": ("off", (TechniqueSpec(name="taylorseer"),), None),
    "taylorseer-model": ("off", (TechniqueSpec(name="taylorseer", options={"scope": "model"}),), None),
    "magcache": ("off", (TechniqueSpec(name="magcache"),), None),  # ratios from the model's genaccel.json
    "density": ("off", (TechniqueSpec(name="density"),), None),  # token density along time
}


def prompts(count: int, seed: int = 777) -> list[str]:
    """Half full captions, half natural variants (fewer attributes named)."""
    return [text for text, _ in prompt_specs(count, seed)]


def prompt_specs(count: int, seed: int = 777) -> list[tuple[str, MelodySpec]]:
    """``prompts`` with the spec each was written from."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        spec = random_spec(rng)
        out.append((spec.caption() if i % 2 == 0 else caption_variant(spec, rng), spec))
    return out


def row_spec(name: str) -> tuple[str, tuple[TechniqueSpec, ...], int | None]:
    """A row by name: one of ``ROWS``, a profile, or a technique (its default options)."""
    if name in ROWS:
        return ROWS[name]
    if name in PROFILES:
        return name, (), None
    if name in technique_names():
        return "off", (TechniqueSpec(name=name),), None
    raise InvalidRequest("profiles", name, "is not a music benchmark row, profile or technique",
                         f"use one of: {', '.join(ROWS)}, or a profile or technique name")


def feature_matrix(evaluator: MusicEvaluator, clips: list[np.ndarray], rate: int) -> np.ndarray | None:
    """Standardised timbre features of the clips that hold a melody (``None`` with fewer than 3)."""
    found = [evaluator.read(c, rate).features for c in clips]
    rows = [f for f in found if f is not None]
    if len(rows) < 3 or evaluator.classifier is None:
        return None
    return (np.stack(rows) - evaluator.classifier.mean) / evaluator.classifier.std


def run_row(pipe: Any, request: JobRequest, family: str) -> tuple[np.ndarray, float, float]:
    """``(samples, wall seconds, denoiser seconds)`` of one request with its techniques on."""
    techniques = apply_techniques(pipe, technique_configs(request, family))
    try:
        techniques.reset()
        with DenoiserCounter(pipe) as counter:
            started = time.perf_counter()
            out = MusicAdapter().generate(pipe, [request], RunHooks(lambda s, t: None))[0][0]
            wall = time.perf_counter() - started
    finally:
        techniques.remove()
    assert isinstance(out, AudioOutput)
    return out.samples[:, 0], wall, counter.seconds


def bench(model: str, count: int, rows: list[str], duration: float | None = None) -> dict[str, Any]:
    settings = Settings()
    registry = ModelRegistry(settings)
    info = registry.resolve(model)
    row_specs = {name: row_spec(name) for name in rows}  # every row checked before anything runs
    pipes = {model: load_pipeline(info, torch.device("cpu"), torch.float32)}
    evaluator = MusicEvaluator.load()
    pairs = prompt_specs(count)
    texts = [text for text, _ in pairs]
    rate = info.defaults.sample_rate or 16_000
    data = feature_matrix(evaluator, [render(spec, seed=i, seconds=duration or CLIP_SECONDS)
                                      for i, (_, spec) in enumerate(pairs)], SAMPLE_RATE)
    results: dict[str, Any] = {"model": model, "prompts": count, "torch_threads": torch.get_num_threads(),
                               "rows": {}}
    warm = prepare_request(JobRequest.from_flat({"modality": "music", "prompt": texts[0], "model": model, "seed": 0,
                                                 "steps": 2, "duration": duration}), registry, settings)[0]
    run_row(pipes[model], warm, info.family)  # warm-up: first-call allocations and lazy imports are not timed
    baseline: list[np.ndarray] = []
    for name in rows:
        profile, techniques, row_steps = row_specs[name]
        scores, walls, denoiser, lsd, clips, steps, seconds = [], [], [], [], [], 0, 0.0
        for i, text in enumerate(texts):
            flat: dict[str, Any] = {"modality": "music", "prompt": text, "model": model, "seed": i,
                                    "profile": profile, "duration": duration, "steps": row_steps}
            request = prepare_request(JobRequest.from_flat(flat).model_copy(update={"techniques": techniques}),
                                      registry, settings)[0]
            served = request.model or model
            if served not in pipes:  # turbo swapped in a student: loaded once, warmed up once
                pipes[served] = load_pipeline(registry.resolve(served), torch.device("cpu"), torch.float32)
                run_row(pipes[served], request, info.family)
            samples, wall, inside = run_row(pipes[served], request, info.family)
            steps, seconds = request.params.steps or 0, request.params.duration_s or 0.0
            scores.append(evaluator.score(samples, rate, text))
            clips.append(samples)
            walls.append(wall)
            denoiser.append(inside)
            if name == "off":
                baseline.append(samples)
            elif baseline:
                lsd.append(log_spectral_distance(samples, baseline[i]))
        accuracy = [s["note_accuracy"] for s in scores if s["note_accuracy"] is not None]
        made = feature_matrix(evaluator, clips, rate)
        results["rows"][name] = {
            "model": served, "profile": profile, "techniques": [t.name for t in techniques], "steps": steps,
            "wall_s_per_clip": round(float(np.mean(walls)), 3),
            "denoiser_s_per_clip": round(float(np.mean(denoiser)), 3),
            "rtf": round(float(np.mean(walls)) / seconds, 3) if seconds else None,
            "exact_match": round(float(np.mean([s["exact"] for s in scores])), 3),
            "note_accuracy": round(float(np.mean(accuracy)), 3) if accuracy else None,
            "lsd_vs_off": round(float(np.mean(lsd)), 2) if lsd else None,
            "fd_vs_data": round(frechet_distance(made, data), 2) if made is not None and data is not None else None,
        }
        print(name, results["rows"][name], flush=True)
    off = results["rows"].get("off")
    if off:
        for row in results["rows"].values():
            row["denoiser_speedup"] = round(off["denoiser_s_per_clip"] / max(row["denoiser_s_per_clip"], 1e-9), 2)
            row["speedup"] = round(off["wall_s_per_clip"] / max(row["wall_s_per_clip"], 1e-9), 2)
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = ["| row | steps | wall s/clip | denoiser s/clip | speed-up (denoiser) | RTF | exact match | "
             "note accuracy | LSD vs off (dB) | FD vs data |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["rows"].items():
        lines.append(f"| {name} | {r['steps']} | {r['wall_s_per_clip']} | {r['denoiser_s_per_clip']} | "
                     f"{r.get('speedup', '')}x ({r.get('denoiser_speedup', '')}x) | {r['rtf']} | {r['exact_match']} | "
                     f"{r['note_accuracy']} | {r['lsd_vs_off'] if r['lsd_vs_off'] is not None else '-'} | "
                     f"{r.get('fd_vs_data') if r.get('fd_vs_data') is not None else '-'} |")
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    """The JSON, and the markdown table beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(f"# music bench: {results['model']}\n\n{markdown(results)}\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="music-ref")
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/music.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = bench(args.model, args.prompts, args.rows.split(","), args.duration)
    write(results, args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
