"""Run one claimed job: load (cached) pipeline, generate with progress and cancel, write
artifacts, and record the outcome. Embedded threads and Celery workers both call this."""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from genaccel.accel import apply_techniques
from genaccel.artifacts import artifact_locations, write_audio, write_png, write_video
from genaccel.artifacts.audio import chunk_record
from genaccel.artifacts.storage import LocalArtifacts, artifact_store
from genaccel.errors import GenAccelError, JobCancelled, JobInterrupted, JobStateConflict, TechniqueRemoveFailed
from genaccel.events import EventName, JobEvent, Listener
from genaccel.profiles import PROFILES
from genaccel.settings import Settings
from genaccel.spec import Artifact, Job, JobError, JobRequest, JobState
from genaccel.store.base import Store
from pipelines.encoder_cache import attach_prompt_cache, prompt_cache_counts
from pipelines.invariance import make_batch_invariant, self_check
from pipelines.loader import CacheKey, ModelCache, load_pipeline, resolve_device, resolve_dtype
from pipelines.memory import OutOfMemory, free_memory, is_out_of_memory, memory_saving, undo_memory_saving
from pipelines.modality import AudioOutput, ImageOutput, ModalityAdapter, Output, RunHooks, VideoOutput, adapter_for
from pipelines.prepare import technique_configs, technique_warnings
from pipelines.previews import attach_preview_vae, preview_vae_folder
from pipelines.registry import ModelInfo, ModelRegistry, model_card

log = logging.getLogger(__name__)
Claim = Callable[[list[str]], list[Job]]
"""Claims the given queued job ids for this worker; returns those it got."""


def guidance_warnings(pipe: Any, info: ModelInfo | None = None, guidance: float | None = None) -> list[str]:
    """Say out loud when a model ignores parts of the request (guidance-embedded students) or
    when guidance distilled into a model is applied a second time."""
    unet = getattr(pipe, "unet", None)
    if unet is not None and unet.config.get("time_cond_proj_dim") is not None:
        return ["guidance is embedded in this model: guidance_scale conditions one denoiser pass per step "
                "(no classifier-free guidance) and negative_prompt is ignored"]
    card = model_card(Path(info.location)) if info is not None and info.source != "builtin" else {}
    distilled = card.get("guidance_distilled")
    if distilled is None:
        return []
    if guidance is not None and guidance > 1:
        return [f"this model was distilled at guidance_scale {distilled:g}: guidance_scale={guidance:g} applies "
                "classifier-free guidance on top (two denoiser passes per step); pass --guidance 1"]
    return [f"guidance is distilled into this model (at guidance_scale {distilled:g}): one denoiser pass per "
            "step, no classifier-free guidance, and negative_prompt is ignored"]


def profile_notes(request: JobRequest, info: ModelInfo) -> list[str]:
    """What a profile that picks students did: the swap, or why it fell back."""
    if request.swapped_from:
        return [f"profile {request.profile}: ran {info.name}, a distilled student of {request.swapped_from}, "
                f"with its own sampler at {request.params.steps} steps"]
    profile = PROFILES.get(request.profile)
    card = model_card(Path(info.location)) if info.source != "builtin" else {}
    if profile is not None and profile.student and not card.get("distilled_from"):
        return [f"profile {request.profile}: {info.name} has no distilled student here; ran the training-free "
                "max recipe instead (`genaccel distill` makes one)"]
    return []


class JobRunner:
    """Callable the dispatcher hands each claimed job to. Owns the worker's model cache."""

    def __init__(self, store: Store, registry: ModelRegistry, settings: Settings,
                 cache: ModelCache | None = None, on_event: Listener | None = None) -> None:
        """``on_event`` receives the lifecycle events of every job (``genaccel.events``)."""
        self.store, self.registry, self.settings = store, registry, settings
        self.on_event = on_event
        budget = int(settings.model_cache_gb * 2**30) if settings.model_cache_gb else None
        self.cache = cache or ModelCache(settings.model_cache_size, budget)
        self._interrupted: str | None = None
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.artifacts = artifact_store(settings)
        self.staging = settings.home / "staging" / str(os.getpid())
        """Where this process writes artifacts before uploading them (remote artifact store)."""
        _remove_dead_staging(settings.home / "staging")
        self._invariance: list[str] | None = None
        """Layers that failed the batch-invariance self-check on this CPU (``None``: not run)."""

    def __call__(self, job: Job, claim: Claim | None = None) -> None:
        """Run ``job`` (already ``running``) to a terminal state. With ``claim`` and
        ``Settings.max_batch`` > 1, compatible queued jobs are claimed and run in the same call."""
        jobs = [job, *self._gather(job, claim)]
        for j in jobs:
            self._notify(j, "started")
        try:
            self._run_and_record(jobs)
        finally:
            for j in jobs:
                self._notify(self.store.get(j.id), "finished")

    def interrupt(self, reason: str) -> None:
        """Stop running jobs at their next step and put them back in the queue (shutdown)."""
        self._interrupted = reason

    def _adapter(self, request: JobRequest) -> tuple[ModelInfo, ModalityAdapter]:
        info = self.registry.resolve(request.model or self.registry.default_model(request.modality))
        return info, adapter_for(info)

    def _gather(self, job: Job, claim: Claim | None) -> list[Job]:
        if claim is None or self.settings.max_batch <= 1:
            return []
        adapter = self._adapter(job.request)[1]
        key = adapter.batch_key(job.request)
        room = self.settings.max_batch - job.request.params.num_outputs
        if key is None or room <= 0:
            return []
        queued = self.store.list_jobs(state="queued", limit=200).jobs
        ids, outputs = [], 0
        for other in sorted(queued, key=lambda j: (-j.priority, j.created_at)):
            n = other.request.params.num_outputs
            if other.id != job.id and adapter.batch_key(other.request) == key and outputs + n <= room:
                ids.append(other.id)
                outputs += n
        return claim(ids) if ids else []

    def _notify(self, job: Job, event: EventName) -> None:
        if self.on_event is not None:
            self.on_event(JobEvent(event, job.id, job=job))

    def _run_and_record(self, jobs: list[Job]) -> None:
        timings = {j.id: {"queued_s": round((j.started_at or time.time()) - j.created_at, 4)} for j in jobs}
        active = []
        for j in jobs:
            if self.store.get(j.id).cancel_requested:
                self._finish(j, "cancelled", timings=timings[j.id])
            else:
                active.append(j)
        if not active:
            return
        batch = _Batch(self.store, active, lambda: self._interrupted, self.on_event)
        try:
            artifacts = self._run(batch, timings)
        except JobInterrupted as exc:
            for j in batch.active:
                with self._owned(j):
                    self.store.requeue(j.id, exc.message, worker=j.worker)
                log.warning("job %s went back to the queue: %s", j.id, exc.message)
        except JobCancelled:
            for j in batch.active:
                self._finish(j, "cancelled", timings=timings[j.id])
        except GenAccelError as exc:
            for j in batch.active:
                self._finish(j, "failed", timings=timings[j.id], error=JobError(
                    code=exc.code, message=exc.message, traceback=traceback.format_exc()))
        except Exception as exc:
            log.exception("job(s) %s failed", ", ".join(j.id for j in batch.active))
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            for j in batch.active:
                self._finish(j, "failed", timings=timings[j.id], error=JobError(
                    code="pipeline_failed", message=message, traceback=traceback.format_exc()))
        else:
            for j in batch.active:
                self._finish(j, "succeeded", artifacts=artifacts[j.id], timings=timings[j.id])

    def _finish(self, job: Job, state: JobState, **fields: Any) -> None:
        """Record the outcome, unless this worker no longer holds the job (its claim lapsed and the
        job was re-queued or taken elsewhere): then the other run's outcome stands. A success is
        remembered for the result cache under the key the service gave the job."""
        with self._owned(job):
            key = job.metadata.get("result_key")
            if state == "succeeded" and key:  # first, so a client that sees the success finds it cached
                self.store.remember_result(str(key), job.id)
            self.store.finish(job.id, state, worker=job.worker, **fields)

    @contextlib.contextmanager
    def _owned(self, job: Job) -> Iterator[None]:
        try:
            yield
        except JobStateConflict as exc:
            log.warning("job %s: outcome of this run dropped: %s", job.id, exc.message)

    def _run(self, batch: _Batch, timings: dict[str, dict[str, float]]) -> dict[str, list[Artifact]]:
        request = batch.active[0].request
        info, adapter = self._adapter(request)
        # techniques are applied per job and removed after it, so all profiles share one clean pipeline
        key = CacheKey(info.name, str(self.dtype), str(self.device))
        t0 = time.perf_counter()
        with self.cache.use(key, lambda: self._load(info)) as pipe:
            load_s = round(time.perf_counter() - t0, 4)
            configs = technique_configs(request, info.family)
            techniques = apply_techniques(pipe, configs)
            try:
                scheduler = type(pipe.scheduler).__name__  # the one used (a technique may swap it)
                applied = techniques.describe()
                common = {"scheduler": scheduler, "device": str(self.device), "batch_size": len(batch.active),
                          "dtype": str(self.dtype).removeprefix("torch."), "techniques": applied,
                          "warnings": profile_notes(request, info)
                          + guidance_warnings(pipe, info, request.params.guidance_scale)
                          + technique_warnings(request, configs) + self._invariance_warnings(batch)}
                for j in batch.active:
                    self.store.update_metadata(j.id, common)
                t1 = time.perf_counter()
                counts = prompt_cache_counts(pipe)
                before = (counts.hits, counts.misses) if counts else (0, 0)
                if counts is not None:  # a LoRA may change the text encoders: no cached embeddings then
                    counts.enabled = not any(c.name == "lora" for c in configs)
                outputs = self._generate(pipe, adapter, batch, techniques)
                run_s = round(time.perf_counter() - t1, 4)
                if counts is not None:
                    used = {"hits": counts.hits - before[0], "misses": counts.misses - before[1]}
                    for j in batch.active:
                        self.store.update_metadata(j.id, {"prompt_cache": used})
            finally:
                try:
                    techniques.remove()  # the cached pipeline is clean for the next job
                except TechniqueRemoveFailed as exc:  # it is not: drop it, the next job loads a fresh one
                    self.cache.evict(key)
                    for j in batch.active:
                        warned = self.store.get(j.id).metadata.get("warnings", [])
                        self.store.update_metadata(j.id, {"warnings": [*warned, exc.message]})
        out: dict[str, list[Artifact]] = {}
        for j in batch.active:
            t2 = time.perf_counter()
            timings[j.id].update(load_s=load_s, run_s=run_s)
            out[j.id] = self._save(j, outputs[j.id], info, applied, scheduler, timings[j.id])
            timings[j.id]["save_s"] = round(time.perf_counter() - t2, 4)
        return out

    def _load(self, info: ModelInfo) -> Any:
        """The pipeline, with its tiny VAE for previews when it has one and previews are on, and
        batch-invariant layers when jobs may be batched."""
        pipe = load_pipeline(info, self.device, self.dtype)
        invariant = self.settings.batch_invariant
        if invariant or (invariant is None and self.settings.max_batch > 1):
            make_batch_invariant(pipe)
            if self._invariance is None:
                self._invariance = self_check()
                if self._invariance:
                    log.warning("batch invariance does not hold on this CPU (%s): batched outputs may differ from "
                                "the same jobs run alone in the last bits; set GENACCEL_MAX_BATCH=1 where that "
                                "matters", ", ".join(self._invariance))
        attach_prompt_cache(pipe, self.settings.prompt_cache_size)
        folder = preview_vae_folder(info, self.settings) if self.settings.previews else None
        if folder is not None:
            attach_preview_vae(pipe, folder, self.device, self.dtype)
        return pipe

    def _invariance_warnings(self, batch: _Batch) -> list[str]:
        if not self._invariance or len(batch.active) < 2:
            return []
        return [f"batched with {len(batch.active) - 1} other job(s) on a CPU where batch invariance fails its "
                f"self-check ({', '.join(self._invariance)}): the output may differ in the last bits from this "
                "job run alone"]

    def _generate(self, pipe: Any, adapter: ModalityAdapter, batch: _Batch, techniques: Any) -> dict[str, list[Any]]:
        """Run the batch; on out-of-memory retry once, one job at a time with memory-saving options."""
        try:
            techniques.reset()
            return self._call(pipe, adapter, batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        free_memory()
        log.warning("out of memory on job(s) %s; retrying with memory-saving options",
                    ", ".join(j.id for j in batch.active))
        saved = memory_saving(pipe)
        try:
            for j in batch.active:
                self.store.update_metadata(j.id, {"memory_saving": saved})
            images: dict[str, list[Any]] = {}
            for j in list(batch.active):
                techniques.reset()
                try:
                    images.update(self._call(pipe, adapter, batch.only(j)))
                except JobCancelled:  # that job is finished; the others go on
                    continue
            if not batch.active:
                raise JobCancelled("every job of the batch was cancelled")
            return images
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_memory()
            p = batch.active[0].request.params
            raise OutOfMemory(
                f"ran out of memory at {p.width}x{p.height}, {p.steps} steps, {p.num_outputs} output(s) even with "
                f"{', '.join(saved) or 'one job at a time'}; fix: lower width/height or num_outputs") from None
        finally:
            undo_memory_saving(pipe, saved)

    def _call(self, pipe: Any, adapter: ModalityAdapter, batch: _Batch) -> dict[str, list[Output]]:
        jobs = list(batch.active)
        on_latents = self._previews(pipe, adapter, batch, jobs) if self.settings.previews else None
        results = adapter.generate(pipe, [j.request for j in jobs], RunHooks(batch.on_step, on_latents,
                                                                             self._streamer(batch, jobs)))
        return {j.id: outs for j, outs in zip(jobs, results, strict=True) if j in batch.active}

    def _streamer(self, batch: _Batch, jobs: list[Job]) -> Callable[[Any], None] | None:
        """Parts of a job's output ready early (speech sentences): into its metadata
        (``audio_chunks``, read by SSE and ``genaccel.service.speech``) and out as ``audio`` events."""
        if len(jobs) != 1:
            return None
        job, sent = jobs[0], []

        def on_chunk(chunk: Any) -> None:
            if job not in batch.active:
                return
            record = chunk_record(chunk.index, chunk.total, chunk.text, chunk.audio.samples, chunk.audio.sample_rate,
                                  chunk.step)
            sent.append(record)
            self.store.update_metadata(job.id, {"audio_chunks": list(sent)})
            if self.on_event is not None:
                self.on_event(JobEvent("audio", job.id, step=chunk.step, total=chunk.total_steps, chunk=record))
        return on_chunk

    def _previews(self, pipe: Any, adapter: ModalityAdapter, batch: _Batch, jobs: list[Job]):  # type: ignore[no-untyped-def]
        """A few step previews per job (its first output), in the job's metadata for events and the UI."""
        rows, offset = {}, 0
        for j in jobs:
            rows[j.id], offset = offset, offset + j.request.params.num_outputs

        def on_latents(step: int, total: int, latents: Any) -> None:
            if step >= total or step % max(1, total // 4):
                return
            for j in list(batch.active):
                url = adapter.preview(pipe, latents, rows[j.id])
                if url is None:
                    return
                self.store.update_metadata(j.id, {"preview": url, "preview_step": step})
                if self.on_event is not None:
                    self.on_event(JobEvent("progress", j.id, step=step, total=total, preview=url))
        return on_latents

    def _save(self, job: Job, outputs: list[Output], info: ModelInfo, applied: Any, scheduler: str,
              timings: dict[str, float]) -> list[Artifact]:
        """Write the outputs; with a remote artifact store, write them to a staging folder of this
        process, upload every file under the job's id and keep only the store's locations."""
        remote = not isinstance(self.artifacts, LocalArtifacts)
        staging = self.staging / job.id if remote else None
        out_dir = staging or (Path(job.output_dir) if job.output_dir else self.settings.outputs)
        request = job.request
        p = request.params
        assert p.seed is not None
        meta: dict[str, Any] = {
            "job_id": job.id, "model": info.name, "profile": request.profile, "techniques": applied,
            "scheduler": scheduler, "device": str(self.device), "timings": dict(timings),
        }
        fmt = p.output_format or adapter_for(info).formats[0]
        artifacts = [save_output(output, out_dir / f"{job.id[:12]}-{i}.{fmt}", fmt, request, (p.seed + i) % 2**32,
                                 {**meta, "index": i}) for i, output in enumerate(outputs)]
        if staging is None:
            return artifacts
        uploaded = []
        for art in artifacts:  # the record names the files only once every upload has finished
            for loc in artifact_locations(art)[1:]:
                if Path(loc).is_file():
                    self.artifacts.put(job.id, Path(loc), mimetypes.guess_type(loc)[0] or "application/octet-stream")
            uploaded.append(art.model_copy(update={"path": self.artifacts.put(job.id, Path(art.path), art.media_type)}))
        shutil.rmtree(staging, ignore_errors=True)
        return uploaded


def _remove_dead_staging(root: Path) -> None:
    """Staging folders of processes that died mid-upload: their jobs run again elsewhere."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.name.isdigit() and not psutil.pid_exists(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


def save_output(output: Output, path: Path, fmt: str, request: JobRequest, seed: int,
                meta: dict[str, Any]) -> Artifact:
    """Write one typed output with the writer for its media type."""
    if isinstance(output, ImageOutput):
        return write_png(output.image, path, request, seed, meta)
    if isinstance(output, VideoOutput):
        audio = (output.audio.samples, output.audio.sample_rate) if output.audio is not None else None
        return write_video(output.frames, output.fps, path, fmt, request, seed, meta, audio)
    if isinstance(output, AudioOutput):
        return write_audio(output.samples, output.sample_rate, path, fmt, request, seed, {**meta, **output.meta})
    raise TypeError(f"an adapter returned {type(output).__name__}, not an ImageOutput, VideoOutput or AudioOutput")


class _Batch:
    """The jobs of one pipeline call and its step callback: progress goes to each job; a job
    whose cancel flag is set is finished ``cancelled`` at that step (its outputs are dropped);
    when none is left the call stops."""

    def __init__(self, store: Store, jobs: list[Job], interrupted: Callable[[], str | None],
                 on_event: Listener | None = None) -> None:
        self.store = store
        self.on_event = on_event
        self.active = list(jobs)
        self.parent: _Batch | None = None
        self.interrupted = interrupted

    def only(self, job: Job) -> _Batch:
        """A batch of one of these jobs whose cancellation also leaves this batch."""
        sub = _Batch(self.store, [job], self.interrupted, self.on_event)
        sub.parent = self
        return sub

    def on_step(self, step: int, total: int) -> None:
        reason = self.interrupted()
        if reason:
            raise JobInterrupted(reason)
        for j in list(self.active):
            if self.on_event is not None:
                self.on_event(JobEvent("progress", j.id, step=step, total=total))
            if self.store.set_progress(j.id, step, total):
                self.active.remove(j)
                if self.parent is not None:
                    self.parent.active.remove(j)
                with contextlib.suppress(JobStateConflict):
                    self.store.finish(j.id, "cancelled", worker=j.worker)
        if not self.active:
            raise JobCancelled(f"cancelled at step {step} of {total}")
