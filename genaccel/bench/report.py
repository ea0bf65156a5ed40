"""Benchmark outputs: JSON rows, a markdown table, and a speed-up vs prompt-accuracy plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | profile | techniques | steps | size | batch | latency s (median [min–max]) | denoiser evals "
            "| s/step | speed-up | denoiser s (speed-up) | peak RSS MB | prompt acc | FD | PSNR dB | SSIM |")
    lines = [head, "|" + "|".join(["---"] * 16) + "|"]
    for r in rows:
        latency = f"{_fmt(r['latency_s'])} [{_fmt(r['latency_s_min'])}–{_fmt(r['latency_s_max'])}]"
        techniques = ", ".join(r["techniques"]) or "—"
        lines.append(
            f"| {r['model']} | {r['profile']} | {techniques} | {r['steps']} | {r['width']}x{r['height']} "
            f"| {r['batch']} "
            f"| {latency} | {_fmt(r['denoiser_evals'])} | {_fmt(r['s_per_step'])} | {_fmt(r['speedup'])}x "
            f"| {_fmt(r.get('denoiser_s'))} ({_fmt(r.get('denoiser_speedup'))}x) "
            f"| {_fmt(r['peak_rss_mb'], 4)} | {_fmt(r['prompt_accuracy'])} | {_fmt(r['fd'])} | {_fmt(r['psnr'])} "
            f"| {_fmt(r['ssim'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Speed-up (x) against prompt accuracy (y), one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = [r for r in rows if r["model"] == model]
        xs = [r["speedup"] for r in pts]
        ys = [r["prompt_accuracy"] if r["prompt_accuracy"] is not None else float("nan") for r in pts]
        ax.scatter(xs, ys, label=model)
        for r, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(f"{r['profile']}/{r['steps']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("speed-up against the baseline row (end-to-end latency)")
    ax.set_ylabel("prompt accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict[str, Any], json_path: Path, md_path: Path, png_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    floor = result["meta"].get("fd_floor")
    md = [f"# {result['meta']['name']}\n", f"Command: `{result['meta']['command']}`\n",
          f"Machine: {result['meta']['machine']}\n"]
    if floor is not None:
        md.append(f"Fréchet distance floor (two independent real sets of the same size): {floor:.3g}\n")
    md.append(markdown_table(result["rows"]))
    md_path.write_text("\n".join(md))
    if any(r.get("prompt_accuracy") is not None for r in result["rows"]):  # a speed-only run has nothing to plot
        plot(result["rows"], png_path, result["meta"]["name"])
