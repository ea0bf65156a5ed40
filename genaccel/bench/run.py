"""Run a benchmark matrix in one process: every row on the same machine, side by side.

Each row: warm-up calls, then ``repeats`` timed end-to-end pipeline calls (text encoding,
denoising, VAE decode) through the same ``generate_images`` the job runner uses; denoiser
evaluations and peak memory while timing; then quality on the reference generator's
captions, half from trained and half from held-out shape-colour pairs, half in the full form and
half natural (parts left out, synonyms, other orders): exact-match prompt accuracy (every
attribute a prompt names read back) by the evaluator, per-attribute accuracy by pair group, the
template check's reads (nothing learned) and where the two readers disagree, unparsable prompts
counted, Fréchet distance in the evaluator's feature space, and PSNR/SSIM against the group's
baseline row at the same seeds.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from genaccel.accel import TechniqueSet, apply_techniques
from genaccel.bench.matrix import BenchMatrix, BenchRow
from genaccel.bench.measure import DenoiserCounter, PeakMemory
from genaccel.settings import Settings
from genaccel.spec import JobRequest

Progress = Callable[[str], None]
#: Quality columns besides ``prompt_accuracy`` (now exact match by the evaluator), ``fd``, ``psnr``, ``ssim``.
QUALITY_KEYS = ("exact_match_trained", "exact_match_heldout", "exact_match_full", "exact_match_partial",
                "attribute_accuracy_micro", "attribute_accuracy", "attribute_accuracy_by_group",
                "shape_accuracy_evaluator", "shape_accuracy_template", "template_exact_match",
                "shape_none_rate", "reader_agreement", "disagreements", "scored_prompts", "unparsable_prompts",
                "unparsable_examples")
EVALUATOR = Path(__file__).resolve().parents[2] / "assets" / "evaluator"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def _request(row: BenchRow, prompt: str, seed: int, count: int = 1) -> JobRequest:
    flat: dict[str, Any] = {"prompt": prompt, "model": row.model, "profile": row.profile, "seed": seed,
                            "num_outputs": count, "steps": row.steps, "width": row.width, "height": row.height,
                            "techniques": [t.model_dump() for t in row.techniques]}
    return JobRequest.from_flat(flat)


class QualityData:
    """Quality captions (trained and held-out pairs, full and natural forms), their real images'
    features, and the Fréchet floor."""

    def __init__(self, count: int, seed: int, evaluator_dir: Path = EVALUATOR, captions: str = "mixed",
                 extra_prompts: list[str] | None = None) -> None:
        from genaccel.metrics.evaluator import Evaluator
        from genaccel.metrics.quality import frechet_distance
        from genaccel.refdata.shapes import render, sample_specs

        self.evaluator = Evaluator.load(evaluator_dir)
        held = sample_specs(count - count // 2, seed, split="heldout")
        trained = sample_specs(count // 2, seed + 7, split="train")
        specs = [s for pair in zip(held, trained, strict=False) for s in pair] + held[len(trained):]
        self.groups: list[str | None] = ["heldout" if i % 2 == 0 or i >= 2 * len(trained) else "trained"
                                         for i in range(len(specs))]
        rng = np.random.default_rng([seed, 0xCA9])
        self.prompts = [s.caption(rng) if captions == "mixed" and i % 4 >= 2 else s.caption()
                        for i, s in enumerate(specs)]
        self.real_count = len(specs)
        if extra_prompts:
            self.prompts += list(extra_prompts)
            self.groups += [None] * len(extra_prompts)
        reals = []
        for offset in (1, 2):
            rng = np.random.default_rng(seed + offset)
            reals.append(np.stack([np.asarray(render(s, rng)) for s in specs]))
        self.real_features = self.evaluator.extract_features(reals[0])
        self.fd_floor = frechet_distance(self.real_features, self.evaluator.extract_features(reals[1]))


def run_matrix(matrix: BenchMatrix, settings: Settings, *, command: str = "",
               progress: Progress | None = None, chunk: int = 16) -> dict[str, Any]:
    """Validate every row, then measure them; returns ``{"meta": ..., "rows": [...]}``."""
    from pipelines.loader import load_pipeline, resolve_device, resolve_dtype
    from pipelines.prepare import prepare_request, technique_configs
    from pipelines.registry import ModelRegistry

    say = progress or (lambda _: None)
    from genaccel.profiles import PROFILES

    registry = ModelRegistry(settings)
    rows = matrix.rows()
    # a profile that sets its own step count keeps it; the matrix's steps apply to the others
    rows = [r if PROFILES.get(r.profile) is None or PROFILES[r.profile].recipe(registry.resolve(r.model).family).steps
            is None else dataclasses.replace(r, steps=None) for r in rows]
    prepared = [prepare_request(_request(r, "a shape", matrix.seed, r.batch), registry, settings) for r in rows]
    q = matrix.quality
    quality = QualityData(q.prompts, q.seed, captions=q.captions, extra_prompts=q.extra_prompts) if q.enabled \
        else None
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    pipes: dict[str, Any] = {}
    baseline_images: dict[tuple[Any, ...], np.ndarray] = {}
    results = []
    for n, (row, (request, info)) in enumerate(zip(rows, prepared, strict=True), 1):
        label = f"[{n}/{len(rows)}] {row.model} {row.label} {request.params.steps} steps"
        if info.name not in pipes:
            say(f"{label}: loading {info.name}")
            pipes = {info.name: load_pipeline(info, device, dtype)}  # one model in memory at a time
        pipe = pipes[info.name]
        if quality is not None:
            request = request.model_copy(update={"prompt": quality.prompts[0]})
        applied = apply_techniques(pipe, technique_configs(request, info.family))
        try:
            record = _measure(pipe, request, row, matrix, applied, label, say)
            if quality is not None:
                total = len(quality.prompts)

                def quality_progress(i: int, label: str = label, total: int = total) -> None:
                    say(f"{label}: quality {i}/{total}")

                record.update(_quality(pipe, request, quality, row, baseline_images, chunk, quality_progress,
                                       applied))
        finally:
            applied.remove()
        results.append(record)
    for record, row in zip(results, rows, strict=True):
        base = next(r for r, rr in zip(results, rows, strict=True) if rr.group == row.group and rr.baseline)
        record["speedup"] = base["latency_s"] / record["latency_s"]
        record["denoiser_speedup"] = base["denoiser_s"] / record["denoiser_s"] if record["denoiser_s"] else None
    import torch

    meta = {
        "name": matrix.name, "command": command, "machine": machine(), "device": str(device),
        "dtype": str(dtype).removeprefix("torch."), "repeats": matrix.repeats, "warmup": matrix.warmup,
        "quality_prompts": len(quality.prompts) if quality else 0,
        "quality_split": "trained+heldout pairs, alternating",
        "quality_captions": matrix.quality.captions,
        "fd_floor": quality.fd_floor if quality else None, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__, "matrix": matrix.model_dump(mode="json"),
    }
    return {"meta": meta, "rows": results}


def _measure(pipe: Any, request: JobRequest, row: BenchRow, matrix: BenchMatrix, applied: TechniqueSet,
             label: str, say: Progress) -> dict[str, Any]:
    from pipelines.image import generate_images

    def call() -> None:
        applied.reset()
        generate_images(pipe, request, lambda s, t: None)

    for _ in range(matrix.warmup):
        call()
    latencies = []
    with PeakMemory() as memory, DenoiserCounter(pipe) as counter:
        for i in range(matrix.repeats):
            say(f"{label}: timing {i + 1}/{matrix.repeats}")
            start = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - start)
    steps = request.params.steps or 1
    return {
        "model": row.model, "profile": row.label, "techniques": [c["name"] for c in applied.describe()],
        "steps": steps, "width": request.params.width, "height": request.params.height, "batch": row.batch,
        "guidance_scale": request.params.guidance_scale, "baseline": row.baseline,
        "latency_s": statistics.median(latencies), "latency_s_min": min(latencies),
        "latency_s_max": max(latencies),
        "denoiser_evals": counter.samples / (matrix.repeats * row.batch),
        "denoiser_s": counter.seconds / matrix.repeats,
        "s_per_step": statistics.median(latencies) / steps,
        "peak_rss_mb": round(memory.peak_rss / 2**20, 1),
        "peak_vram_mb": round(memory.peak_vram / 2**20, 1) if memory.peak_vram is not None else None,
        "prompt_accuracy": None, "fd": None, "psnr": None, "ssim": None, **dict.fromkeys(QUALITY_KEYS),
    }


def _quality(pipe: Any, request: JobRequest, data: QualityData, row: BenchRow,
             baselines: dict[tuple[Any, ...], np.ndarray], chunk: int, say: Callable[[int], None],
             applied: TechniqueSet) -> dict[str, Any]:
    from genaccel.metrics.quality import frechet_distance, psnr, ssim
    from pipelines.image import generate_images

    images = []
    for start in range(0, len(data.prompts), chunk):
        say(start)
        prompts = data.prompts[start:start + chunk]
        seeded = request.model_copy(update={"params": request.params.model_copy(
            update={"seed": request.params.seed + start, "num_outputs": 1})})  # type: ignore[operator]
        applied.reset()
        images += [np.asarray(im.convert("RGB"))
                   for im in generate_images(pipe, seeded, lambda s, t: None, prompts=prompts)]
    stack = np.stack(images)
    out = score_quality(data.evaluator, stack, data.prompts, data.groups)
    out["fd"] = frechet_distance(data.real_features, data.evaluator.extract_features(stack[:data.real_count]))
    if row.baseline:
        baselines[row.group] = stack
    elif row.group in baselines and baselines[row.group].shape == stack.shape:
        ref = baselines[row.group]
        out.update(psnr=psnr(ref, stack), ssim=ssim(ref, stack))
    return out


def score_quality(evaluator: Any, images: np.ndarray, prompts: list[str], groups: list[str | None] | None = None,
                  sample_count: int = 32) -> dict[str, Any]:
    """The quality columns of one row from its images (uint8 (N, H, W, 3)) and prompts, plus
    ``_samples`` (the first ``sample_count`` outputs with both reads) for the contact sheet."""
    from genaccel.metrics.quality import agreement, score_reads
    from genaccel.metrics.template import read_templates

    reads = evaluator.predict(images)
    templates = read_templates(images)
    samples = [{"image": images[i], "prompt": prompts[i], "evaluator": reads[i], "template": templates[i]}
               for i in range(min(sample_count, len(prompts)))]
    by_eval = score_reads(reads, prompts, groups)
    by_template = score_reads(templates, prompts, groups)
    agree = agreement(reads, templates, prompts)
    return {
        "prompt_accuracy": by_eval["exact_match"],
        **{k: by_eval[k] for k in ("exact_match_trained", "exact_match_heldout", "exact_match_full",
                                   "exact_match_partial", "attribute_accuracy_micro", "attribute_accuracy",
                                   "attribute_accuracy_by_group")},
        "shape_accuracy_evaluator": by_eval["attribute_accuracy"]["shape"],
        "shape_accuracy_template": by_template["attribute_accuracy"]["shape"],
        "template_exact_match": by_template["exact_match"],
        "shape_none_rate": float(np.mean([r["shape"] == "none" for r in reads])) if reads else None,
        "reader_agreement": agree["rate"],
        "disagreements": [{"prompt": e["prompt"], "evaluator": e["a"], "template": e["b"]}
                          for e in agree["examples"]],
        "scored_prompts": by_eval["scored"],
        "unparsable_prompts": by_eval["unparsable"],
        "unparsable_examples": by_eval["unparsable_examples"],
        "_samples": samples,
    }
