"""One Settings object, read once from ``GENACCEL_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseModel, frozen=True):
    """Bounds every request is validated against before anything is queued."""

    prompt_max_chars: int = 2000
    size_min: int = 64
    size_max: int = 2048
    size_multiple: int = 8
    max_megapixels: float = 4.2
    steps_max: int = 200
    guidance_max: float = 30.0
    num_outputs_max: int = 8
    seed_max: int = 2**32 - 1
    frames_max: int = 257
    fps_max: float = 120.0
    duration_max_s: float = 600.0
    speed_min: float = 0.25
    speed_max: float = 4.0
    init_image_max_bytes: int = 20 * 1024 * 1024


class Settings(BaseSettings):
    """Process-wide configuration. Build it once (``Settings()``) and pass it down."""

    model_config = SettingsConfigDict(env_prefix="GENACCEL_", env_nested_delimiter="__", frozen=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".genaccel")
    """Folder for the job database and default outputs."""
    db_path: Path | None = None
    """SQLite file of the embedded store (default: ``home/jobs.db``)."""
    outputs_dir: Path | None = None
    """Where artifacts go when the caller names no folder (default: ``home/outputs``)."""
    model_dirs: list[Path] = Field(default_factory=list)
    """Folders whose sub-folders (diffusers pipelines) are served by their folder name."""
    lora_dirs: list[Path] = Field(default_factory=list)
    """Folders of LoRA adapters (``NAME/`` folders or ``NAME.safetensors`` files) that requests may
    name; ``home/loras`` is always searched."""
    default_model: str | None = None
    """Model used when a request names none (default: shapes-sd when shipped, else tiny-sd)."""
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    workers: int = 1
    """In-process worker threads of the embedded dispatcher."""
    max_attempts: int = 2
    """A job whose worker died is re-queued until it has been started this many times."""
    model_cache_size: int = 2
    previews: bool = True
    """Write a few small step previews into each job's metadata (SSE progress events, web UI)."""
    preview_vaes: dict[str, Path] = Field(default_factory=dict)
    """A tiny VAE (folder of a diffusers ``AutoencoderTiny``, safetensors) per model name, decoding
    that model's previews; for models whose folder has no ``preview_vae/`` (hub-cache, built-in)."""
    max_batch: int = 1
    """Outputs one pipeline call may produce for several compatible queued jobs (same model,
    profile, size, steps, guidance); 1 runs jobs one at a time. Each output keeps its own seed."""
    batch_invariant: bool | None = None
    """Batch-invariant layers (pipelines/invariance.py), so a batched result is bit-identical to
    the same job run alone; ``None``: on when ``max_batch`` > 1. Checked on CPU float32."""
    model_cache_gb: float | None = None
    """Memory budget of a worker's model cache (least recently used models are evicted above it)."""
    job_memory_gb: float | None = None
    """Activation memory one job may use: video clips whose estimate is above it are refused before
    queueing (``None``: the GPU's memory, else 60% of RAM)."""
    job_timeout_s: float = 3600.0
    """Longest a job may run; Celery's visibility timeout is set above it."""
    heartbeat_s: float = 30.0
    """A distributed worker with no heartbeat for this long is presumed dead and its job re-queued."""
    orphan_grace_s: float = 10.0
    """A worker whose launcher is gone stops at its running job's next step (the job goes back to the
    queue); if it is still running this many seconds later (a model loading), it exits hard."""
    routes: dict[str, str] = Field(default_factory=dict)
    """Celery queue per model name (e.g. a GPU class); other jobs go to the queue named by their modality."""
    limits: Limits = Field(default_factory=Limits)
    api_keys: list[str] = Field(default_factory=list)
    """SHA-256 hex digests of the API keys (``genaccel keys new`` prints a key and its digest);
    empty: no authentication, and ``genaccel serve`` listens on 127.0.0.1 only."""
    rate_limit_per_min: int = 120
    """Requests per minute per API key (429 with Retry-After above it); 0 turns the limit off."""
    max_queued_per_key: int = 100
    """Jobs one key may have queued at once."""
    openai_timeout_s: float = 300.0
    """Longest a synchronous call of the OpenAI-compatible API (images, speech) waits for its job;
    past it the job is cancelled and the call answers 504."""
    openai_models: dict[str, str] = Field(default_factory=dict)
    """OpenAI model names answered by a model of this server (``{"dall-e-3": "shapes-sd"}``), for
    clients that cannot be told another model name; the answer's warnings header says so."""
    max_request_bytes: int = 32 * 1024 * 1024
    """Largest request body the API reads (413 above it); an init image travels inside it."""
    redis_url: str | None = None
    """Redis for the distributed shape (store and Celery broker); ``None``: SQLite + threads."""
    webhook_secret: str = ""
    """HMAC key that signs webhook deliveries; requests with a webhook are refused while it is empty."""
    webhook_allow_private: bool = False
    """Allow webhook URLs that resolve to private, loopback or link-local addresses."""
    redis_prefix: str = "genaccel"
    """Key prefix of the Redis job store (several deployments can share one Redis)."""
    artifact_store: str | None = None
    """``s3://BUCKET[/PREFIX]``: workers upload artifacts there and the API streams them from it
    (several machines); ``None``: artifacts stay in local folders (one machine)."""
    s3_endpoint_url: str | None = None
    """The S3 endpoint for MinIO, Ceph, R2, moto... (``None``: AWS); credentials come from the
    standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` variables."""
    s3_region: str | None = None
    prompt_cache_size: int = 256
    """Text-encoder outputs each loaded pipeline remembers (prompt-embedding cache); 0 turns it off."""
    result_cache: bool = True
    """Answer an identical deterministic request (same model weights, parameters, seed) with the
    artifacts of the earlier job at once; a request can opt out with ``"cache": false``."""
    plugins: list[str] = Field(default_factory=list)
    """Python modules imported when a registry is built: each may register modality adapters and
    models (see ``pipelines/modality.py``), so a deployment adds a modality without editing genaccel."""

    @property
    def database(self) -> Path:
        return self.db_path or self.home / "jobs.db"

    @property
    def outputs(self) -> Path:
        return self.outputs_dir or self.home / "outputs"
