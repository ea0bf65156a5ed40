"""The GPU check: one prepared script for a CUDA machine (eight minutes on an H100/H200-class GPU,
warm-up included).

    python bench/gpu_check.py OUT_DIR                  # real sizes, bf16, on cuda:0
    python bench/gpu_check.py OUT_DIR --dry            # tiny sizes on the CPU (the test suite runs this)
    python bench/gpu_check.py OUT_DIR --only sd15,wan --budget-s 300

For each real-size architecture of ``genaccel/bench/real_size.py`` (random weights: speed and
memory only, never quality) it measures, in this order so that the required figures come first:

1. the denoiser step (the classifier-free-guidance batch of 2) with SDPA attention, with
   xformers when present (UNets), and under ``torch.compile``: latency, FLOPs counted by
   ``torch.utils.flop_counter``, achieved TFLOP/s against the GPU's published dense bf16 peak,
   peak VRAM; and whether each sample of the batched step equals the same sample run alone
   (max |difference|: genaccel claims bit-identical batching only on CPUs where
   ``pipelines.invariance.self_check`` passes, so on a GPU the difference is reported, not assumed);
2. one output end to end at ``off`` (the model's steps and guidance), ``balanced`` and ``turbo``
   (random weights have no distilled student, so ``turbo`` runs its training-free fallback), with
   speed-ups against ``off`` and achieved denoiser TFLOP/s;
3. every technique of the family alone, end to end, until the time budget runs out (rows left
   are recorded as skipped, never silently dropped).

It writes ``gpu-check.json`` and ``gpu-check.md`` to OUT_DIR. Its dependencies are genaccel's
own (diffusers, transformers, accelerate, peft...): on a machine with no network carry them as
wheels (docs/benchmarks.md, "GPU check").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from genaccel.accel import apply_techniques, parse_technique, technique_names  # noqa: E402
from genaccel.bench.measure import DenoiserCounter, PeakMemory  # noqa: E402
from genaccel.bench.real_size import ARCHS, Arch, DenoiserOnly  # noqa: E402
from genaccel.profiles import PROFILES  # noqa: E402
from genaccel.spec import TechniqueSpec  # noqa: E402

#: Published dense bf16 tensor-core peaks (TFLOP/s), by a substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "4090": 165.0,
                    "A10": 125.0, "B200": 2250.0}
#: Techniques measured at the denoiser level (compile, attention) or that change memory, not
#: speed (vae_tiling), or need an adapter file (lora): not run as end-to-end rows.
NOT_END_TO_END = {"compile", "attention", "vae_tiling", "lora", "channels_last"}
PROFILE_ROWS = ("balanced", "turbo")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, Any]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def denoiser_of(pipe: Any) -> torch.nn.Module:
    from genaccel.training.prune import denoiser_of as pipeline_denoiser

    return pipe.transformer if isinstance(pipe, DenoiserOnly) else pipeline_denoiser(pipe)


def _first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        return _first(out[0])
    return _first(next(iter(out.values())) if hasattr(out, "values") else out.sample)


def _slice(value: Any, i: int, batch: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return value[i:i + 1]
    if isinstance(value, dict):
        return {k: _slice(v, i, batch) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_slice(v, i, batch) for v in value)
    return value


def capture_inputs(arch: Arch, pipe: Any, call: dict[str, Any], device: torch.device,
                   dtype: torch.dtype) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The denoiser's arguments at the first step of a real pipeline call (or the bare
    denoiser's example inputs)."""
    if isinstance(pipe, DenoiserOnly):
        return (), pipe.inputs(device, dtype)
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not seen:
            seen.append((args, dict(kwargs)))

    handle = denoiser_of(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        _run(pipe, arch, call, steps=2, device=device)  # 1 step takes other paths (PixArt)
    finally:
        handle.remove()
    return seen[0]


def _run(pipe: Any, arch: Arch, call: dict[str, Any], steps: int, device: torch.device) -> Any:
    generator = torch.Generator(device="cpu").manual_seed(0)
    return pipe(prompt="a red square on a white background", num_inference_steps=steps,
                guidance_scale=arch.guidance, generator=generator, output_type="np", **call)


def denoiser_rows(arch: Arch, pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device,
                  peak: float | None, reps: tuple[int, int], compile_: bool) -> list[dict[str, Any]]:
    from torch.utils.flop_counter import FlopCounterMode

    model = denoiser_of(pipe)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            reference = _first(model(*args, **kwargs))
        flops = counter.get_total_flops()
        batch = int(reference.shape[0])
        worst = 0.0
        for i in range(batch):
            alone = _first(model(*_slice(args, i, batch), **_slice(kwargs, i, batch)))
            worst = max(worst, float((alone.float() - reference[i:i + 1].float()).abs().max()))
        variants: list[tuple[str, Callable[[], Any]]] = [("sdpa", lambda: model(*args, **kwargs))]
        if device.type == "cuda" and getattr(pipe, "unet", None) is not None:
            try:
                import xformers  # noqa: F401

                pipe.enable_xformers_memory_efficient_attention()
                variants.append(("xformers", lambda: model(*args, **kwargs)))
            except ImportError:
                pass
        if compile_:
            compiled = torch.compile(model)
            variants.append(("compile", lambda: compiled(*args, **kwargs)))
        rows = []
        base = None
        for name, fn in variants:
            if name == "compile" and getattr(pipe, "unet", None) is not None and hasattr(
                    pipe, "disable_xformers_memory_efficient_attention"):
                pipe.disable_xformers_memory_efficient_attention()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            latency, _ = _timed(fn, *reps)
            achieved = flops / latency / 1e12
            base = base or latency
            rows.append({
                "arch": arch.name, "variant": name, "batch": batch, "step_s": latency,
                "speedup": base / latency, "gflops_per_step": flops / 1e9, "tflops_achieved": achieved,
                "peak_fraction": achieved / peak if peak else None,
                "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
                "wall_s": time.perf_counter() - started,
                "batched_vs_alone_max_abs": worst, "batched_equals_alone": worst == 0.0,
            })
    return rows


def end_to_end_row(arch: Arch, pipe: Any, call: dict[str, Any], label: str, specs: list[TechniqueSpec],
                   steps: int, device: torch.device, flops_per_call: float, reps: tuple[int, int]) -> dict[str, Any]:
    row: dict[str, Any] = {"arch": arch.name, "row": label, "techniques": [s.name for s in specs], "steps": steps}
    try:
        applied = apply_techniques(pipe, [parse_technique(s) for s in specs])
    except Exception as exc:  # a refusal is a result: the row says why
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    try:
        def once() -> Any:
            applied.reset()
            return _run(pipe, arch, call, steps, device)

        for _ in range(reps[0]):
            once()
        with PeakMemory() as memory, DenoiserCounter(pipe) as counter:
            latency, _ = _timed(once, 0, reps[1])
        calls = counter.calls / reps[1]
        seconds = counter.seconds / reps[1]
        row.update(latency_s=latency, denoiser_calls=calls, denoiser_s=seconds,
                   tflops_achieved=flops_per_call * calls / seconds / 1e12 if seconds else None,
                   peak_vram_mb=memory.peak_vram / 2**20 if memory.peak_vram is not None else None,
                   peak_rss_mb=memory.peak_rss / 2**20)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        applied.remove()
    return row


def family_techniques(family: str) -> list[TechniqueSpec]:
    out = []
    for name in technique_names():
        if name in NOT_END_TO_END:
            continue
        spec = TechniqueSpec(name=name)
        try:
            config = parse_technique(spec)
        except Exception:
            continue
        if family in config.families:
            out.append(spec)
    return out


def build(arch: Arch, dry: bool, device: torch.device, dtype: torch.dtype) -> Any:
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        pipe = arch.build(dry)
    if isinstance(pipe, DenoiserOnly):
        pipe.transformer.to(device, dtype)
        return pipe
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check(out_dir: Path, *, dry: bool, only: list[str] | None = None, budget_s: float = 450.0,
          compile_: bool | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    compile_ = (not dry) if compile_ is None else compile_
    reps = (1, 1) if dry else (2, 5)
    e2e_reps = (0, 1) if dry else (1, 1)
    budget = Budget(budget_s)
    peak = peak_tflops(device)
    archs = [ARCHS[n] for n in (only or list(ARCHS))]
    pipes: dict[str, Any] = {}
    flops: dict[str, float] = {}
    denoiser: list[dict[str, Any]] = []
    e2e: list[dict[str, Any]] = []
    skipped: list[str] = []
    # 1 and 2: the required figures for every architecture first
    for arch in archs:
        call = arch.tiny_call if dry else arch.call
        say(f"{arch.name}: building ({arch.published})")
        pipe = pipes[arch.name] = build(arch, dry, device, dtype)
        args, kwargs = capture_inputs(arch, pipe, call, device, dtype)
        rows = denoiser_rows(arch, pipe, args, kwargs, device, peak, reps, compile_)
        flops[arch.name] = rows[0]["gflops_per_step"] * 1e9
        denoiser += rows
        say(f"{arch.name}: step {rows[0]['step_s'] * 1e3:.1f} ms, {rows[0]['tflops_achieved']:.1f} TFLOP/s")
        if isinstance(pipe, DenoiserOnly):
            continue
        e2e.append(end_to_end_row(arch, pipe, call, "off", [], arch.steps, device, flops[arch.name], e2e_reps))
        for name in PROFILE_ROWS:
            recipe = PROFILES[name].recipe(arch.family)
            label = name if recipe.techniques else f"{name} (no recipe for {arch.family}: runs as off)"
            e2e.append(end_to_end_row(arch, pipe, call, label, list(recipe.techniques), recipe.steps or arch.steps,
                                      device, flops[arch.name], e2e_reps))
    # 3: every technique alone, while the budget lasts
    for arch in archs:
        pipe = pipes[arch.name]
        if isinstance(pipe, DenoiserOnly):
            continue
        for spec in family_techniques(arch.family):
            label = f"{arch.name} {spec.name}"
            if budget.left() <= 0:
                skipped.append(label)
                continue
            say(f"{label}: end to end")
            e2e.append(end_to_end_row(arch, pipe, arch.tiny_call if dry else arch.call, spec.name, [spec],
                                      arch.steps, device, flops[arch.name], e2e_reps))
    for row in e2e:
        off = next((r for r in e2e if r["arch"] == row["arch"] and r["row"] == "off" and "latency_s" in r), None)
        if off and "latency_s" in row:
            row["speedup"] = off["latency_s"] / row["latency_s"]
            row["denoiser_speedup"] = off["denoiser_s"] / row["denoiser_s"] if row["denoiser_s"] else None
    import diffusers

    result = {
        "meta": {"dry": dry, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                 platform.processor() or platform.machine(), "dtype": str(dtype).removeprefix("torch."),
                 "torch": torch.__version__, "diffusers": diffusers.__version__, "peak_bf16_tflops": peak,
                 "elapsed_s": budget_s - budget.left(), "budget_s": budget_s, "compile": compile_,
                 "archs": {a.name: {"published": a.published, "output": a.size, "family": str(a.family)}
                           for a in archs},
                 "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)},
        "denoiser": denoiser, "end_to_end": e2e, "skipped": skipped,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu-check.json").write_text(json.dumps(result, indent=1, default=str))
    (out_dir / "gpu-check.md").write_text(markdown(result))
    return result


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"# GPU check ({'dry run, tiny sizes' if meta['dry'] else 'real sizes'})", "",
             f"{meta['device']}, {meta['dtype']}, torch {meta['torch']}, diffusers {meta['diffusers']}; "
             f"{meta['elapsed_s']:.0f} s of a {meta['budget_s']:.0f} s budget. Random weights: speed and memory only.",
             "", "## Denoiser step (CFG batch)", "",
             "| arch | variant | batch | step ms | speed-up | GFLOP | TFLOP/s | of peak | VRAM MB | batched = alone |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["denoiser"]:
        same = "yes" if r["batched_equals_alone"] else f"no (max {r['batched_vs_alone_max_abs']:.2g})"
        lines.append(f"| {r['arch']} | {r['variant']} | {r['batch']} | {r['step_s'] * 1e3:.2f} | {r['speedup']:.2f}x | "
                     f"{r['gflops_per_step']:.3g} | {r['tflops_achieved']:.3g} | {_fmt(r['peak_fraction'], '.0%')} | "
                     f"{_fmt(r['peak_vram_mb'], '.0f')} | {same} |")
    lines += ["", "## One output end to end", "",
              "| arch | row | steps | latency s | speed-up | denoiser speed-up | denoiser TFLOP/s | VRAM MB | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        lines.append(f"| {r['arch']} | {r['row']} | {r['steps']} | {_fmt(r.get('latency_s'))} | "
                     f"{_fmt(r.get('speedup'), '.2f')}x | {_fmt(r.get('denoiser_speedup'), '.2f')}x | "
                     f"{_fmt(r.get('tflops_achieved'))} | {_fmt(r.get('peak_vram_mb'), '.0f')} | "
                     f"{r.get('error', '')[:120]} |")
    if result["skipped"]:
        lines += ["", f"Skipped (time budget): {', '.join(result['skipped'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu-check.json and gpu-check.md")
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    parser.add_argument("--only", default="", help=f"comma-separated architectures, of: {', '.join(ARCHS)}")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop adding technique rows after this")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n] or None
    unknown = sorted(set(only or []) - set(ARCHS))
    if unknown:
        parser.error(f"unknown architecture {', '.join(unknown)}; use some of {', '.join(ARCHS)}")
    check(args.out, dry=args.dry, only=only, budget_s=args.budget_s, compile_=False if args.no_compile else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
