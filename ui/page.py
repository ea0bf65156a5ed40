"""What every tab of the web UI shares: the job operations for the caller's key, JSON and HTML
views of a job, and why a modality cannot be served. Handlers never raise: errors become inline
messages (``FAILURES`` are the expected ones).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from genaccel.artifacts import api_path
from genaccel.errors import GenAccelError, InvalidRequest, UnsupportedModality
from genaccel.profiles import PROFILES, measured_speedups
from genaccel.service import AuthError, Backend
from genaccel.spec import Job, JobRequest
from pipelines.modality import served_modalities
from pipelines.prepare import prepare_request
from ui import render
from ui.jobs import UIJobs, parameters
from ui.links import FileLinks

POLL_S = 0.5
"""How often a tab polls the store while its job runs."""
FAILURES = (GenAccelError, AuthError)


def message(exc: Exception) -> str:
    return exc.message if isinstance(exc, GenAccelError) else str(exc)


def unavailable_reason(backend: Backend, modality: str) -> str | None:
    """Why ``modality`` cannot be served here (``None`` when it can)."""
    served = served_modalities()
    if modality not in served:
        try:
            prepare_request(JobRequest.from_flat({"modality": modality, "prompt": "probe"}), backend.registry,
                            backend.settings)
        except UnsupportedModality as exc:
            return (f"Not available yet: {exc.limit}. This server runs {', '.join(served)} jobs; "
                    "this tab starts working when its pipeline ships.")
        except GenAccelError as exc:
            return f"Not available: {exc.message}"
    if not [m for m in backend.registry.available() if m.modality == modality]:
        return f"Not available: no {modality} model is installed on this server (see `genaccel models`)."
    return None


class Page:
    """State and operations shared by the tabs (one per mounted UI, not per browser)."""

    def __init__(self, backend: Backend, links: FileLinks) -> None:
        self.jobs = UIJobs(backend)
        self.backend = backend
        self.links = links
        self.eta = render.EtaClock()

    # -- plain operations (also the gradio_client API) ---------------------------------------

    def job_json(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.id, "state": job.state, "progress": job.progress.model_dump(),
            "queue_position": self.jobs.queue_position(job), "cancel_requested": job.cancel_requested,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "timings": job.timings, "parameters": parameters(job),
            "error": {"code": job.error.code, "message": job.error.message} if job.error else None,
            "artifacts": [{"name": a.name, "media_type": a.media_type, "seed": a.seed,
                           "url": self.links.url(job.id, a.name), "download": self.links.url(job.id, a.name,
                                                                                             download=True),
                           "api_url": api_path(job.id, a.name)} for a in job.artifacts],
        }

    def api_submit(self, request: dict[str, Any], api_key: str = "") -> dict[str, Any]:
        """Queue a job from a flat request (the REST body's keys); returns the job or ``{"error": ...}``."""
        return self._json(lambda: self.jobs.submit(dict(request), self.jobs.owner(api_key)))

    def api_job(self, job_id: str, api_key: str = "") -> dict[str, Any]:
        """State, progress, parameters and signed artifact links of one of your jobs."""
        return self._json(lambda: self.jobs.get(job_id, self.jobs.owner(api_key)))

    def api_cancel(self, job_id: str, api_key: str = "") -> dict[str, Any]:
        """Cancel one of your jobs: a queued one never starts, a running one stops at its next step."""
        return self._json(lambda: self.jobs.cancel(job_id, self.jobs.owner(api_key)))

    def api_history(self, api_key: str = "", limit: int = 20) -> dict[str, Any]:
        """Your most recent jobs, newest first."""
        try:
            jobs = self.jobs.history(self.jobs.owner(api_key), limit=max(1, min(int(limit), 200)))
        except FAILURES as exc:
            return {"error": {"message": message(exc)}}
        return {"jobs": [self.job_json(j) for j in jobs]}

    def _json(self, get: Callable[[], Job]) -> dict[str, Any]:
        try:
            return self.job_json(get())
        except FAILURES as exc:
            body = {"code": getattr(exc, "code", "unauthorized"), "message": message(exc)}
            if isinstance(exc, InvalidRequest):
                body.update(field=exc.field, fix=exc.fix)
            return {"error": body}

    # -- views --------------------------------------------------------------------------------

    def show(self, job: Job) -> tuple[str, str, str, str]:
        """``(progress, outputs, timings, parameters JSON)`` of one job."""
        eta = self.eta.left(job)
        return (render.progress_html(job, self.jobs.queue_position(job), eta_s=eta),
                render.outputs_html(job, self.links.url),
                render.timing_text(job), json.dumps(parameters(job), indent=2))

    def profile_info(self, name: str) -> str:
        profile = PROFILES.get(name)
        # read each time: a benchmark recorded while the server runs shows up without a restart
        return render.profile_markdown(profile, measured_speedups().get(name, {})) if profile else ""

    def key_status(self, key: str) -> str:
        if not self.jobs.keys.enabled:
            return ""
        try:
            owner = self.jobs.owner(key)
        except AuthError as exc:
            return render.error_html(str(exc))
        return render.notice_html(f"signed in: you see the jobs of key {owner[:8]}…")
