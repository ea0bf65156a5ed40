"""Benchmark outputs: JSON rows, a markdown table (plus a quality table), and a speed-up vs
prompt-accuracy (exact match) plot."""

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
            "| s/step | speed-up | denoiser s (speed-up) | peak RSS MB | exact match | FD | PSNR dB | SSIM |")
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


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def quality_table(rows: list[dict[str, Any]]) -> str:
    """Exact match (trained / held-out pairs, full / partial captions), per-attribute accuracy,
    shape by evaluator and by template check, reader agreement, unparsable prompts."""
    from genaccel.refdata.shapes import ATTRIBUTES

    attrs = list(ATTRIBUTES)
    head = ("| model | profile | steps | exact match | trained pairs | held-out pairs | full captions "
            "| partial captions | " + " | ".join(f"{a} (trained / held-out)" for a in attrs)
            + " | shape, template | exact, template | shape agreement | shape none | micro avg | unparsable |")
    lines = [head, "|" + "|".join(["---"] * (14 + len(attrs))) + "|"]
    for r in rows:
        if r.get("exact_match_trained", None) is None and r.get("scored_prompts") is None:
            continue
        groups = r.get("attribute_accuracy_by_group") or {}
        per = " | ".join(f"{_pct(groups.get('trained', {}).get(a))} / {_pct(groups.get('heldout', {}).get(a))}"
                         for a in attrs)
        agree = (r.get("reader_agreement") or {}).get("shape")
        lines.append(
            f"| {r['model']} | {r['profile']} | {r['steps']} | {_pct(r['prompt_accuracy'])} "
            f"| {_pct(r.get('exact_match_trained'))} | {_pct(r.get('exact_match_heldout'))} "
            f"| {_pct(r.get('exact_match_full'))} | {_pct(r.get('exact_match_partial'))} | {per} "
            f"| {_pct(r.get('shape_accuracy_template'))} | {_pct(r.get('template_exact_match'))} | {_pct(agree)} "
            f"| {_pct(r.get('shape_none_rate'))} | {_pct(r.get('attribute_accuracy_micro'))} "
            f"| {r.get('unparsable_prompts', 0)} |"
        )
    if len(lines) == 2:
        return ""
    examples = [(r["model"], r["profile"], e) for r in rows for e in (r.get("disagreements") or [])[:3]]
    if examples:
        lines.append("\nWhere the evaluator and the template check disagree (first examples per row):\n")
        lines += [f"- {m} {p}: \"{e['prompt']}\": evaluator {e['evaluator']}, template {e['template']}"
                  for m, p, e in examples]
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
    ax.set_ylabel("prompt accuracy (exact match)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def contact_sheet(samples: list[tuple[str, list[dict[str, Any]]]], path: Path, cols: int = 8) -> None:
    """A PNG of sample outputs per row: each image (x2) over its prompt and what the evaluator (E)
    and the template check (T) read for shape and colour; ``samples``: (row label, [{image,
    prompt, evaluator, template}])."""
    import numpy as np
    from PIL import Image, ImageDraw

    tile_w, tile_h, text_h = 136, 128, 40
    bands = []
    for label, items in samples:
        n_rows = (len(items) + cols - 1) // cols
        band = Image.new("RGB", (cols * tile_w, 18 + n_rows * (tile_h + text_h)), (255, 255, 255))
        draw = ImageDraw.Draw(band)
        draw.text((4, 3), label, fill=(0, 0, 0))
        for i, item in enumerate(items):
            x, y = (i % cols) * tile_w, 18 + (i // cols) * (tile_h + text_h)
            band.paste(Image.fromarray(np.asarray(item["image"], dtype=np.uint8)).resize((128, 128)), (x + 4, y))
            e, t = item["evaluator"], item["template"]
            lines = [item["prompt"][:22], item["prompt"][22:44],
                     f"E {e.get('shape')} {e.get('colour')}  T {t.get('shape')} {t.get('colour')}"[:30]]
            for k, line in enumerate(lines):
                draw.text((x + 4, y + tile_h + 1 + 12 * k), line, fill=(0, 0, 0) if k < 2 else (160, 0, 0))
        bands.append(band)
    _stack(bands, path)


def write_video_sheet(rows: list[tuple[str, list[Any]]], prompts: list[str], path: Path) -> None:
    """A PNG per variant: each clip (frames, H, W, 3 uint8) as one strip of its frames, under the
    variant's label, with its prompt; ``rows``: (label, [clip, ...]) with clip i made for prompts[i]."""
    import numpy as np
    from PIL import Image, ImageDraw

    strips: list[Image.Image] = []
    for label, clips in rows:
        for i, clip in enumerate(clips):
            frames = np.concatenate([np.asarray(f, dtype=np.uint8) for f in clip], axis=1)
            h = frames.shape[0]
            strip = Image.new("RGB", (max(frames.shape[1], 480), h + 14), (255, 255, 255))
            strip.paste(Image.fromarray(frames), (0, 14))
            ImageDraw.Draw(strip).text((2, 1), f"{label}: {prompts[i]}"[:90], fill=(0, 0, 0))
            strips.append(strip)
    _stack(strips, path)


def _stack(parts: list[Any], path: Path) -> None:
    """PIL images one under the other on white, saved to ``path`` (nothing when there are none)."""
    from PIL import Image

    if not parts:
        return
    sheet = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), (255, 255, 255))
    y = 0
    for part in parts:
        sheet.paste(part, (0, y))
        y += part.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def write_outputs(result: dict[str, Any], json_path: Path, md_path: Path, png_path: Path) -> None:
    """JSON, markdown and plot; plus ``<name>-sheet.png`` of sample outputs when rows carry
    ``_samples`` (taken out of the rows first, so the JSON stays plain)."""
    samples = [(f"{r['model']} {r['profile']} {r['steps']} steps", r.pop("_samples"))
               for r in result["rows"] if r.get("_samples")]
    if samples:
        contact_sheet(samples, json_path.with_name(json_path.stem + "-sheet.png"))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    floor = result["meta"].get("fd_floor")
    md = [f"# {result['meta']['name']}\n", f"Command: `{result['meta']['command']}`\n",
          f"Machine: {result['meta']['machine']}\n"]
    if floor is not None:
        md.append(f"Fréchet distance floor (two independent real sets of the same size): {floor:.3g}\n")
    md.append(markdown_table(result["rows"]))
    quality = quality_table(result["rows"])
    if quality:
        md += ["Quality: exact match = every attribute the prompt names read back right by the evaluator; "
               "per-attribute accuracy by shape-colour pair group; template = the nothing-learned check "
               "(template IoU, hue distance).\n", quality]
    md_path.write_text("\n".join(md))
    if any(r.get("prompt_accuracy") is not None for r in result["rows"]):  # a speed-only run has nothing to plot
        plot(result["rows"], png_path, result["meta"]["name"])
