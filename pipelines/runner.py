"""Run one claimed job: load (cached) pipeline, generate with progress and cancel, write
artifacts, and record the outcome. Embedded threads and Celery workers both call this."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from genaccel.accel import apply_techniques
from genaccel.artifacts import write_png
from genaccel.errors import GenAccelError, JobCancelled
from genaccel.settings import Settings
from genaccel.spec import Artifact, Job, JobError
from genaccel.store.base import Store
from pipelines.image import generate_images
from pipelines.loader import CacheKey, ModelCache, load_pipeline, resolve_device, resolve_dtype
from pipelines.prepare import technique_configs
from pipelines.registry import ModelRegistry

log = logging.getLogger(__name__)


def guidance_warnings(pipe: Any) -> list[str]:
    """Say out loud when a model ignores parts of the request (guidance-embedded students)."""
    unet = getattr(pipe, "unet", None)
    if unet is not None and unet.config.get("time_cond_proj_dim") is not None:
        return ["guidance is embedded in this model: guidance_scale conditions one denoiser pass per step "
                "(no classifier-free guidance) and negative_prompt is ignored"]
    return []


class JobRunner:
    """Callable the dispatcher hands each claimed job to. Owns the worker's model cache."""

    def __init__(self, store: Store, registry: ModelRegistry, settings: Settings,
                 cache: ModelCache | None = None) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        budget = int(settings.model_cache_gb * 2**30) if settings.model_cache_gb else None
        self.cache = cache or ModelCache(settings.model_cache_size, budget)
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)

    def __call__(self, job: Job) -> None:
        timings: dict[str, float] = {"queued_s": round((job.started_at or time.time()) - job.created_at, 4)}
        try:
            artifacts = self._run(job, timings)
        except JobCancelled:
            self.store.finish(job.id, "cancelled", timings=timings)
        except GenAccelError as exc:
            self.store.finish(job.id, "failed", timings=timings,
                              error=JobError(code=exc.code, message=exc.message, traceback=traceback.format_exc()))
        except Exception as exc:
            log.exception("job %s failed", job.id)
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            self.store.finish(job.id, "failed", timings=timings,
                              error=JobError(code="pipeline_failed", message=message, traceback=traceback.format_exc()))
        else:
            self.store.finish(job.id, "succeeded", artifacts=artifacts, timings=timings)

    def _run(self, job: Job, timings: dict[str, float]) -> list[Artifact]:
        request = job.request
        if self.store.get(job.id).cancel_requested:
            raise JobCancelled("cancelled before it started")
        info = self.registry.resolve(request.model or self.registry.default_model(request.modality))
        # techniques are applied per job and removed after it, so all profiles share one clean pipeline
        key = CacheKey(info.name, str(self.dtype), str(self.device))
        t0 = time.perf_counter()
        with self.cache.use(key, lambda: load_pipeline(info, self.device, self.dtype)) as pipe:
            timings["load_s"] = round(time.perf_counter() - t0, 4)
            scheduler = type(pipe.scheduler).__name__
            techniques = apply_techniques(pipe, technique_configs(request))
            try:
                applied = techniques.describe()
                self.store.update_metadata(job.id, {"scheduler": scheduler, "device": str(self.device),
                                                    "dtype": str(self.dtype).removeprefix("torch."),
                                                    "techniques": applied, "warnings": guidance_warnings(pipe)})
                techniques.reset()
                t1 = time.perf_counter()
                images = generate_images(pipe, request, self._on_step(job.id))
                timings["run_s"] = round(time.perf_counter() - t1, 4)
            finally:
                techniques.remove()  # the cached pipeline is clean for the next job
        t2 = time.perf_counter()
        out_dir = Path(job.output_dir) if job.output_dir else self.settings.outputs
        p = request.params
        assert p.seed is not None
        meta: dict[str, Any] = {
            "job_id": job.id, "model": info.name, "profile": request.profile, "techniques": applied,
            "scheduler": scheduler, "width": images[0].width, "height": images[0].height,
            "device": str(self.device), "timings": dict(timings),
        }
        artifacts = []
        for i, image in enumerate(images):
            seed = (p.seed + i) % 2**32
            path = out_dir / f"{job.id[:12]}-{i}.png"
            artifacts.append(write_png(image, path, request, seed, {**meta, "index": i}))
        timings["save_s"] = round(time.perf_counter() - t2, 4)
        return artifacts

    def _on_step(self, job_id: str):  # type: ignore[no-untyped-def]
        def on_step(step: int, total: int) -> None:
            if self.store.set_progress(job_id, step, total):
                raise JobCancelled(f"job {job_id} cancelled at step {step} of {total}")
        return on_step
