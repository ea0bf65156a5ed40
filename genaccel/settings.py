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
    default_model: str | None = None
    """Model used when a request names none (default: shapes-sd when shipped, else tiny-sd)."""
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    workers: int = 1
    """In-process worker threads of the embedded dispatcher."""
    max_attempts: int = 2
    """A job whose worker died is re-queued until it has been started this many times."""
    model_cache_size: int = 2
    limits: Limits = Field(default_factory=Limits)

    @property
    def database(self) -> Path:
        return self.db_path or self.home / "jobs.db"

    @property
    def outputs(self) -> Path:
        return self.outputs_dir or self.home / "outputs"
