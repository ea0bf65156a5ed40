"""Job model: what a client asks for (``JobRequest``) and what the system tracks (``Job``).

Types and coercion come from pydantic; the limits come from ``Settings.limits`` and are checked
by ``validate_request`` before anything is queued, so every client (CLI, batch, REST, UI) gets
the same one-line error naming the field, the value, the limit and the fix.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from genaccel.errors import InvalidRequest
from genaccel.settings import Limits

Modality = Literal["image", "video", "speech", "music"]
MODALITIES: tuple[str, ...] = ("image", "video", "speech", "music")
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
OUTPUT_FORMATS: tuple[str, ...] = ("png", "mp4", "webm", "gif", "wav", "flac", "mp3", "ogg")
"""Every file format an artifact writer produces; each modality's adapter names the ones it offers."""

# Flat request keys (batch lines, CSV columns, REST bodies) that differ from the field names.
FLAT_ALIASES: dict[str, str] = {
    "guidance": "guidance_scale",
    "negative": "negative_prompt",
    "frames": "num_frames",
    "duration": "duration_s",
    "init": "init_image",
    "text": "prompt",
    "format": "output_format",
    "loudness": "loudness_db",
    "fade": "fade_s",
}
TOP_LEVEL_FIELDS = ("modality", "prompt", "negative_prompt", "model", "profile", "techniques", "priority", "cache")
PARAM_FIELDS = (
    "steps", "guidance_scale", "seed", "width", "height", "num_outputs",
    "init_image", "strength", "num_frames", "fps", "duration_s", "voice", "speed", "output_format",
    "loudness_db", "fade_s",
)
# Fields that only make sense for some modalities.
MODALITY_ONLY: dict[str, tuple[str, ...]] = {
    "num_frames": ("video",),
    "fps": ("video",),
    "duration_s": ("speech", "music", "video"),
    "init_image": ("image", "video"),
    "strength": ("image", "video"),
    "voice": ("speech",),
    "speed": ("speech",),
    "loudness_db": ("speech", "music"),
    "fade_s": ("speech", "music"),
}


class TechniqueSpec(BaseModel):
    """An explicit technique asked for by name, with its options (see ``genaccel profiles``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class GenParams(BaseModel):
    """Generation parameters; ``None`` means "the model's default", resolved at submit time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    num_outputs: int = 1
    init_image: str | None = None
    """Path of an image on the submitting machine, for img2img."""
    strength: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    voice: str | None = None
    """A voice the speech model offers (see ``genaccel models``)."""
    speed: float | None = None
    """Speaking rate for speech, 1 = the voice's own."""
    loudness_db: float | None = None
    """Normalise each audio output to this integrated loudness (LUFS, ITU-R BS.1770), e.g. -14."""
    fade_s: float | None = None
    """Fade each audio output in and out over this many seconds."""
    output_format: str | None = None
    """File format of the outputs (png; mp4, webm, gif; wav, flac, mp3, ogg): the model's default when unset."""


class JobRequest(BaseModel):
    """What to generate. Build from flat keys with ``JobRequest.from_flat``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    modality: Modality = "image"
    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    profile: str = "off"
    techniques: tuple[TechniqueSpec, ...] = ()
    params: GenParams = Field(default_factory=GenParams)
    priority: int = 5
    """0..9; a higher number runs sooner, equal priorities run oldest first."""
    swapped_from: str | None = None
    """Set by the ``turbo`` profile when it ran a distilled student instead of the model asked for
    (that model's name); the job's metadata says so."""
    cache: bool = True
    """An identical earlier request (same model weights, parameters and seed) that succeeded may
    answer this one at once with its artifacts; ``False`` always runs the pipeline."""

    @classmethod
    def from_flat(cls, data: dict[str, Any], defaults: dict[str, Any] | None = None) -> JobRequest:
        """Build a request from a flat mapping (a batch line, a CSV row, a REST body).

        Args:
            data: keys such as ``prompt``, ``model``, ``steps``, ``guidance``, ``negative``.
                Empty strings and ``None`` count as absent.
            defaults: flat values used where ``data`` has none (e.g. from the command line).

        Raises:
            InvalidRequest: an unknown key or a value of the wrong type.
        """
        merged: dict[str, Any] = {}
        for source in (defaults or {}, data):
            for key, value in source.items():
                if value is None or (isinstance(value, str) and value == "" and key != "prompt"):
                    continue
                name = FLAT_ALIASES.get(key, key)
                if name not in TOP_LEVEL_FIELDS and name not in PARAM_FIELDS:
                    known = ", ".join(sorted({*TOP_LEVEL_FIELDS, *PARAM_FIELDS, *FLAT_ALIASES}))
                    raise InvalidRequest(key, value, "unknown field", f"use one of: {known}")
                merged[name] = value
        top = {k: v for k, v in merged.items() if k in TOP_LEVEL_FIELDS}
        params = {k: v for k, v in merged.items() if k in PARAM_FIELDS}
        if "prompt" not in top:
            raise InvalidRequest("prompt", None, "a prompt is required", "give a text prompt of 1..2000 chars")
        return parse_request({**top, "params": params})

    def flat(self) -> dict[str, Any]:
        """The inverse of ``from_flat``: a flat dict without unset values."""
        out = self.model_dump(exclude={"params", "techniques"}, exclude_none=True)
        out.update(self.params.model_dump(exclude_none=True))
        if self.techniques:
            out["techniques"] = [t.model_dump() for t in self.techniques]
        return out


def parse_request(data: dict[str, Any]) -> JobRequest:
    """Validate types of a nested request dict, turning pydantic errors into ``InvalidRequest``."""
    try:
        return JobRequest.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if str(p) != "params"]
        field = ".".join(loc) or "request"
        raise InvalidRequest(field, err.get("input"), err["msg"].rstrip("."), _type_fix(field)) from None


def _type_fix(field: str) -> str:
    if field == "modality":
        return f"use one of: {', '.join(MODALITIES)}"
    return f"check the type of {field!r} (see `genaccel render --help`)"


def _check_range(field: str, value: float, low: float, high: float, fix: str) -> None:
    if not low <= value <= high:
        raise InvalidRequest(field, value, f"must be between {low:g} and {high:g}", fix)


def validate_request(req: JobRequest, limits: Limits) -> None:
    """Check a typed request against the limits; raise ``InvalidRequest`` on the first problem."""
    prompt = req.prompt.strip()
    if not 1 <= len(prompt) <= limits.prompt_max_chars:
        raise InvalidRequest(
            "prompt", req.prompt, f"must have 1..{limits.prompt_max_chars} characters (got {len(prompt)})",
            "shorten the prompt" if prompt else "give a non-empty prompt describing what to generate",
        )
    if req.negative_prompt is not None and len(req.negative_prompt) > limits.prompt_max_chars:
        raise InvalidRequest(
            "negative_prompt", req.negative_prompt, f"must have at most {limits.prompt_max_chars} characters",
            "shorten the negative prompt",
        )
    _check_range("priority", req.priority, 0, 9, "use 0 (lowest) .. 9 (most urgent)")
    p = req.params
    for name in MODALITY_ONLY:
        if getattr(p, name) is not None and req.modality not in MODALITY_ONLY[name]:
            allowed = " or ".join(MODALITY_ONLY[name])
            raise InvalidRequest(
                name, getattr(p, name), f"applies to modality {allowed}, not {req.modality}",
                f"drop {name} or pass --modality {MODALITY_ONLY[name][0]}",
            )
    if p.steps is not None:
        _check_range("steps", p.steps, 1, limits.steps_max, f"pass --steps between 1 and {limits.steps_max}")
    if p.guidance_scale is not None:
        _check_range("guidance_scale", p.guidance_scale, 0, limits.guidance_max,
                     f"pass --guidance between 0 and {limits.guidance_max:g}")
    if p.seed is not None:
        _check_range("seed", p.seed, 0, limits.seed_max, f"pass --seed between 0 and {limits.seed_max}")
    _check_range("num_outputs", p.num_outputs, 1, limits.num_outputs_max,
                 f"pass --num-outputs between 1 and {limits.num_outputs_max}")
    for name in ("width", "height"):
        value = getattr(p, name)
        if value is None:
            continue
        _check_range(name, value, limits.size_min, limits.size_max,
                     f"pass --{name} between {limits.size_min} and {limits.size_max}")
        if value % limits.size_multiple:
            near = max(limits.size_min, round(value / limits.size_multiple) * limits.size_multiple)
            raise InvalidRequest(name, value, f"must be a multiple of {limits.size_multiple}",
                                 f"pass --{name} {near}")
    if p.width is not None and p.height is not None:
        megapixels = p.width * p.height / 1e6
        if megapixels > limits.max_megapixels:
            raise InvalidRequest(
                "width*height", f"{p.width}x{p.height}", f"must be at most {limits.max_megapixels} megapixels "
                f"(got {megapixels:.2f})", "lower --width or --height",
            )
    if p.strength is not None:
        if p.init_image is None:
            raise InvalidRequest("strength", p.strength, "only applies with an init image",
                                 "pass --init IMAGE or drop --strength")
        if not 0 < p.strength <= 1:
            raise InvalidRequest("strength", p.strength, "must be in (0, 1]", "pass --strength such as 0.6")
    if p.init_image is not None:
        _check_init_image(p.init_image, limits)
    if p.num_frames is not None:
        _check_range("num_frames", p.num_frames, 1, limits.frames_max, f"pass --frames 1..{limits.frames_max}")
    if p.fps is not None and not 0 < p.fps <= limits.fps_max:
        raise InvalidRequest("fps", p.fps, f"must be in (0, {limits.fps_max:g}]", "pass --fps such as 8 or 24")
    if p.duration_s is not None and not 0 < p.duration_s <= limits.duration_max_s:
        raise InvalidRequest("duration_s", p.duration_s, f"must be in (0, {limits.duration_max_s:g}] seconds",
                             "pass --duration such as 5")
    if p.loudness_db is not None:
        _check_range("loudness_db", p.loudness_db, -60, -5, "pass --loudness such as -14 (LUFS)")
    if p.fade_s is not None:
        _check_range("fade_s", p.fade_s, 0, 10, "pass --fade such as 0.05 (seconds)")
    if p.speed is not None:
        _check_range("speed", p.speed, limits.speed_min, limits.speed_max,
                     f"pass --speed between {limits.speed_min:g} and {limits.speed_max:g} (1 is the voice's own)")
    if p.voice is not None and not 1 <= len(p.voice) <= 64:
        raise InvalidRequest("voice", p.voice, "must have 1..64 characters", "pass a voice the model offers")
    if p.output_format is not None and p.output_format.lower() not in OUTPUT_FORMATS:
        raise InvalidRequest("output_format", p.output_format, "is not a format genaccel writes",
                             f"use one of: {', '.join(OUTPUT_FORMATS)}")


def _check_init_image(path_text: str, limits: Limits) -> None:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise InvalidRequest("init_image", path_text, "no such file", "pass the path of a PNG, JPEG or WebP image")
    size = path.stat().st_size
    if size > limits.init_image_max_bytes:
        raise InvalidRequest("init_image", path_text, f"is {size} bytes, the limit is {limits.init_image_max_bytes}",
                             "pass a smaller image")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidRequest("init_image", path_text, f"is not a readable image ({exc})",
                             "pass a PNG, JPEG or WebP image") from None


def new_seed() -> int:
    """A fresh random seed for requests that did not name one (recorded in the job)."""
    return secrets.randbelow(2**32)


class Progress(BaseModel):
    step: int = 0
    total: int = 0


class Artifact(BaseModel):
    """One output file. ``sidecar`` names the JSON file beside it that holds the whole request
    and generation metadata (every format has one, whether or not it can embed them)."""

    name: str
    path: str
    media_type: str
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    bytes: int = 0
    duration_s: float | None = None
    frames: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    sidecar: str | None = None


class JobError(BaseModel):
    code: str
    message: str
    traceback: str | None = None


class Job(BaseModel):
    """A request plus everything the system records while running it."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = "queued"
    priority: int = 5
    request: JobRequest
    attempts: int = 0
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress = Field(default_factory=Progress)
    artifacts: list[Artifact] = Field(default_factory=list)
    error: JobError | None = None
    worker: str | None = None
    cancel_requested: bool = False
    output_dir: str | None = None
    owner: str | None = None
    """Who submitted it (an API key's id); ``None`` for local CLI jobs."""
    timings: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES
