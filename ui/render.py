"""HTML and table views of jobs for the web UI: progress, outputs, errors, history rows.

Plain functions of store records (no Gradio import), so they are tested without a browser.
Every user-supplied string is escaped: prompts end up in these fragments.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from genaccel.profiles import Profile
from genaccel.spec import Job

UrlFor = Callable[..., str]
"""``url_for(job_id, name, download=False) -> str``: a signed link to one artifact."""

HISTORY_HEADERS = ["job", "state", "progress", "created", "run s", "profile", "model", "prompt"]

CSS = """
.ga-error {border: 1px solid #d33; background: #fff0f0; color: #8a1010; padding: 8px 12px; border-radius: 6px;}
.ga-ok {color: #1b6e20;}
.ga-progress {font-family: ui-monospace, monospace; padding: 4px 0;}
.ga-bar {height: 8px; background: #e5e7eb; border-radius: 4px; overflow: hidden; margin: 4px 0;}
.ga-bar > div {height: 100%; background: #f97316;}
.ga-gallery {display: flex; flex-wrap: wrap; gap: 12px;}
.ga-gallery figure {margin: 0;}
.ga-gallery img {width: 256px; height: auto; image-rendering: pixelated; border-radius: 4px; display: block;}
.ga-gallery figcaption {font-size: 0.85em;}
.ga-compare {font-size: 1.1em;}
"""


def error_html(message: str) -> str:
    """An inline error box (``role=alert``) with the message as the server wrote it."""
    return f'<div class="ga-error" role="alert">{html.escape(message)}</div>'


def notice_html(message: str) -> str:
    return f'<div class="ga-ok">{html.escape(message)}</div>'


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 100 else f"{value / 60:.1f} min"


class EtaClock:
    """Time left from the step rate seen since a running job was first polled at a step > 0, so
    the model's loading time does not count as sampling time (A1111's estimate includes it)."""

    def __init__(self, size: int = 512) -> None:
        self._first: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def left(self, job: Job, now: float | None = None) -> float | None:
        """Seconds left, or ``None`` until two polls at different steps were seen."""
        now = time.time() if now is None else now
        step, total = job.progress.step, job.progress.total
        if job.state != "running" or not step or not total:
            return None
        with self._lock:
            first = self._first.setdefault(job.id, (step, now))
            self._first.move_to_end(job.id)
            while len(self._first) > self.size:
                self._first.popitem(last=False)
        first_step, first_at = first
        if step <= first_step or now <= first_at:
            return None
        return (now - first_at) / (step - first_step) * (total - step)


def progress_html(job: Job, queue_position: int | None = None, eta_s: float | None = None) -> str:
    """State, a progress bar, "step x of n", the time left (``eta_s``, from ``EtaClock``) or taken."""
    step, total = job.progress.step, job.progress.total
    parts = [f"<b>{html.escape(job.state)}</b>"]
    if job.state == "queued":
        parts.append("next in the queue" if queue_position == 0 else
                     f"{queue_position} job(s) ahead" if queue_position else "waiting for a worker")
    if total:
        parts.append(f"step {step} of {total}")
    if job.state == "running" and job.cancel_requested:
        parts.append("stopping at the next step")
    elif job.state == "running" and eta_s is not None:
        parts.append(f"ETA {_seconds(eta_s)}")
    elif job.state == "running" and step:
        parts.append("ETA: measuring")
    elif job.state == "running":
        parts.append("loading the model")
    if job.done and job.started_at and job.finished_at:
        parts.append(f"in {_seconds(job.finished_at - job.started_at)}")
    if job.error is not None and job.state == "failed":
        parts.append(html.escape(job.error.message))
    frac = 1.0 if job.state == "succeeded" else (step / total if total else 0.0)
    preview = job.metadata.get("preview")
    img = ""
    if job.state == "running" and isinstance(preview, str) and preview.startswith("data:image/"):
        img = f'<img class="ga-preview" alt="step preview" src="{html.escape(preview)}" width="128">'
    return (f'<div class="ga-progress" data-state="{html.escape(job.state)}">{" · ".join(parts)}'
            f'<div class="ga-bar"><div style="width:{frac * 100:.0f}%"></div></div>{img}</div>')


def outputs_html(job: Job, url_for: UrlFor) -> str:
    """Images in a gallery, video and audio in players, each with a download link; while a speech
    job runs, a player per sentence already made (streamed)."""
    if not job.artifacts:
        return streamed_html(job)
    items = []
    for art in job.artifacts:
        src = html.escape(url_for(job.id, art.name))
        download = html.escape(url_for(job.id, art.name, download=True))
        name = html.escape(art.name)
        if art.media_type.startswith("image/"):
            media = f'<a href="{src}" target="_blank"><img src="{src}" alt="{name}"></a>'
        elif art.media_type.startswith("video/"):
            media = f'<video src="{src}" controls loop playsinline width="256"></video>'
        elif art.media_type.startswith("audio/"):
            spectrogram = html.escape(url_for(job.id, art.name.rsplit(".", 1)[0] + ".spectrogram.png"))
            media = (f'<audio src="{src}" controls></audio><br><img class="ga-spectrogram" src="{spectrogram}" '
                     f'alt="spectrogram of {name}" width="256">')
        else:
            media = ""
        seed = f" · seed {art.seed}" if art.seed is not None else ""
        items.append(f'<figure>{media}<figcaption><a href="{download}" download="{name}">download {name}</a>'
                     f'{seed}</figcaption></figure>')
    return f'<div class="ga-gallery">{"".join(items)}</div>'


def streamed_html(job: Job) -> str:
    """Players for the sentences a running speech job has streamed (``audio_chunks``)."""
    chunks = job.metadata.get("audio_chunks") or []
    if job.done or not chunks:
        return ""
    items = [f'<figure><audio src="{html.escape(str(c["audio"]))}" controls></audio><figcaption>sentence '
             f'{int(c["index"]) + 1} of {int(c["total"])}: {html.escape(str(c["text"]))}</figcaption></figure>'
             for c in chunks]
    return f'<div class="ga-gallery ga-stream">{"".join(items)}</div>'


def timing_text(job: Job) -> str:
    """``run 0.52 s · load 0.10 s`` from the job's recorded timings."""
    t = job.timings
    parts = [f"{label} {t[key]:.2f} s" for key, label in (("run_s", "run"), ("load_s", "load"), ("queued_s", "queued"))
             if key in t]
    return " · ".join(parts)


def history_rows(jobs: list[Job], now: float | None = None, positions: Mapping[str, int | None] | None = None,
                 ) -> list[list[Any]]:
    """One row per job for the history table (``HISTORY_HEADERS``); ``positions``: queued jobs ahead."""
    now = time.time() if now is None else now
    rows = []
    for job in jobs:
        total = job.progress.total
        progress = f"{job.progress.step}/{total}" if total else ""
        ahead = (positions or {}).get(job.id)
        if job.state == "queued" and ahead is not None:
            progress = f"{ahead} ahead"
        age = now - job.created_at
        created = time.strftime("%H:%M:%S", time.localtime(job.created_at)) if age < 86400 else \
            time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created_at))
        run_s = job.timings.get("run_s")
        prompt = job.request.prompt if len(job.request.prompt) <= 60 else job.request.prompt[:57] + "..."
        rows.append([job.id[:8], job.state, progress, created, "" if run_s is None else round(run_s, 2),
                     job.request.profile, job.request.model or "", prompt])
    return rows


def profile_markdown(profile: Profile, speedups: Mapping[str, float]) -> str:
    """What a profile does and its measured speed-ups (from the recorded benchmark runs)."""
    text = f"**{profile.name}**: {profile.description}."
    if profile.name == "off":
        return text + " The baseline every speed-up is measured against."
    if speedups:
        measured = ", ".join(f"{model} ×{value:g}" for model, value in sorted(speedups.items()))
        return text + f" Measured speed-up: {measured} (docs/benchmarks.md)."
    return text + " No benchmark of it is recorded yet."


def compare_summary(off: Job, fast: Job) -> str:
    """Both latencies and their ratio once both jobs succeeded."""
    a, b = off.timings.get("run_s"), fast.timings.get("run_s")
    if off.state != "succeeded" or fast.state != "succeeded" or not a or not b:
        return ""
    return (f'<div class="ga-compare"><b>off</b> {a:.2f} s · <b>{html.escape(fast.request.profile)}</b> {b:.2f} s · '
            f"speed-up ×{a / b:.2f}</div>")
