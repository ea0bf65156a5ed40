"""Model registry: resolves a model name to where its pipeline comes from, without loading it.

Names are, in order: built-in offline models, sub-folders of ``Settings.model_dirs``, local
folders (when paths are allowed, e.g. from the CLI), then hub ids read from the local cache only.
Only safetensors weights are loaded and only diffusers/transformers classes are instantiated: a
folder asking for custom code, or holding pickled weights only, is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genaccel.errors import GenAccelError, ModelNotAvailable, UnknownModel, UnsafeModel
from genaccel.families import Family
from genaccel.settings import Settings

Source = Literal["builtin", "asset", "folder", "hub"]
ASSETS = Path(__file__).resolve().parents[1] / "assets"

PAIR_SEPARATOR = "+"
"""``IMAGE+VIDEO`` names a text-to-image-then-image-to-video pair of served models."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
OWN_MODEL_MODULES = {"pipelines.caption_latte"}
"""genaccel's own model classes, which saved reference models name in ``model_index.json``: code
that ships with genaccel, never with the model folder."""
SAFE_LIBRARIES = {"diffusers", "transformers", None, *OWN_MODEL_MODULES}
PICKLE_SUFFIXES = {".bin", ".ckpt", ".pt", ".pth", ".pkl"}


@dataclass(frozen=True)
class ModelDefaults:
    """What a request that names nothing gets, per modality; ``None``: does not apply."""

    steps: int = 30
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    output_format: str | None = None
    """File format when the request names none (``None``: the adapter's first)."""
    num_frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    max_duration_s: float | None = None
    """Longest output the model makes (audio); requests above it are refused before queueing."""
    sample_rate: int | None = None
    channels: int | None = None
    voices: tuple[str, ...] = ()
    """Speech voices; the first is the default."""


@dataclass(frozen=True)
class ModelInfo:
    """What a model name resolves to. ``family`` picks the acceleration profile's techniques."""

    name: str
    modality: str
    family: Family
    source: Source
    location: str
    pipeline_class: str
    defaults: ModelDefaults
    description: str = ""
    builder: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    adapter: str | None = None
    """The modality adapter that runs it (``pipelines/modality.py``); ``None``: the one named like
    its modality."""
    stages: tuple[ModelInfo, ModelInfo] | None = field(default=None, compare=False, repr=False)
    """A text-to-image-then-image-to-video pair (``IMAGE+VIDEO``): the two models it runs."""


# Reference models this project trains and ships in assets/ (scripts/train_*.py make them).
# shapes-sd's guidance 3 was chosen on a validation prompt set (bench/guidance_sweep.py --seed 99:
# exact match 0.53 at 3 against 0.45 at 7.5, the usual SD default; docs/benchmarks.md).
REFERENCE_MODELS: dict[str, tuple[ModelDefaults, str]] = {
    "shapes-sd": (ModelDefaults(steps=50, guidance_scale=3.0, width=64, height=64),
                  "reference Stable-Diffusion-architecture model trained on procedural shapes"),
    "shapes-dit": (ModelDefaults(steps=50, guidance_scale=4.5, width=64, height=64),
                   "reference PixArt-architecture model trained on procedural shapes"),
    "shapes-video": (ModelDefaults(steps=50, guidance_scale=4.5, width=64, height=64, num_frames=8, fps=8.0,
                                   output_format="mp4"),
                     "reference Latte video model (from shapes-dit) trained on moving procedural shapes"),
}


def reference_models(assets: Path = ASSETS) -> dict[str, ModelInfo]:
    """The reference models present in ``assets`` (loaded like any pipeline folder)."""
    found = {}
    for name, (defaults, description) in REFERENCE_MODELS.items():
        path = assets / name
        if (path / "model_index.json").is_file():
            cls, components = pipeline_parts(path)
            from pipelines.modality import modality_of_class

            modality = modality_of_class(cls) or "image"
            found[name] = ModelInfo(name, modality, family_of(cls, components), "asset", str(path), cls, defaults,
                                    description)
    return found


def builtin_models() -> dict[str, ModelInfo]:
    """Offline models that need no files: built from configs with seeded random weights."""
    from pipelines import music_models, noop, tiny

    small = ModelDefaults(steps=20, guidance_scale=7.5, width=64, height=64)
    return {
        **music_models.music_models(ASSETS),
        "tiny-sd": ModelInfo(
            "tiny-sd", "image", Family.SD_UNET, "builtin", "tiny-sd", "StableDiffusionPipeline", small,
            "tiny random-weight Stable-Diffusion-architecture pipeline (tests, smoke runs)", tiny.build_tiny_sd,
        ),
        "tiny-dit": ModelInfo(
            "tiny-dit", "image", Family.IMAGE_DIT, "builtin", "tiny-dit", "PixArtAlphaPipeline",
            ModelDefaults(steps=20, guidance_scale=4.5, width=64, height=64),
            "tiny random-weight PixArt-α-architecture pipeline (tests, smoke runs)", tiny.build_tiny_dit,
        ),
        **speech_models(),
        "noop": ModelInfo(
            "noop", "image", Family.OTHER, "builtin", "noop", "NoopPipeline",
            ModelDefaults(steps=1, guidance_scale=0.0, width=64, height=64),
            "blank images at once: measures the service's own overhead (load tests)", noop.NoopPipeline,
        ),
        **tiny_video_models(),
    }


def speech_models(assets: Path = ASSETS) -> dict[str, ModelInfo]:
    """The tiny speech models, and ``speech-ref`` when its weights are in ``assets``."""
    from genaccel.refdata.speech import VOICES
    from pipelines import speech_models as sm
    from pipelines import speech_ref

    two = ("us-male", "us-female")
    found = {
        "tiny-vits": ModelInfo("tiny-vits", "speech", Family.OTHER, "builtin", "tiny-vits", "VitsSpeech",
                               speech_defaults(1, 16000, two), "tiny random-weight VITS (single pass; tests)",
                               sm.build_tiny_vits),
        "tiny-fastspeech2": ModelInfo("tiny-fastspeech2", "speech", Family.OTHER, "builtin", "tiny-fastspeech2",
                                      "FastSpeech2Speech", speech_defaults(1, 22050, two),
                                      "tiny random-weight FastSpeech2Conformer + HiFi-GAN (single pass; tests)",
                                      sm.build_tiny_fastspeech2),
        "tiny-longcat": ModelInfo("tiny-longcat", "speech", Family.SPEECH_DIT, "builtin", "tiny-longcat",
                                  "LongCatSpeech", speech_defaults(4, 24000, ("default",)),
                                  "tiny random-weight LongCat AudioDiT (flow matching; tests)", sm.build_tiny_longcat),
        "tiny-speech-ref": ModelInfo("tiny-speech-ref", "speech", Family.SPEECH_DIT, "builtin", "tiny-speech-ref",
                                     "SpeechRefModel", speech_defaults(2, 22050, tuple(VOICES)),
                                     "tiny random-weight speech-ref (flow-matching mel DiT; tests)",
                                     speech_ref.build_tiny_speech_ref),
    }
    folder = assets / "speech-ref"
    if (folder / "model.safetensors").is_file():
        found["speech-ref"] = speech_ref_info(
            "speech-ref", folder, "asset",
            "reference TTS trained on espeak-ng speech (phoneme encoder, flow-matching mel DiT, Griffin-Lim)")
    return found


def speech_defaults(steps: int, rate: int, voices: tuple[str, ...]) -> ModelDefaults:
    """A speech model's defaults: mono audio at ``rate``, no image fields, no guidance."""
    return ModelDefaults(steps=steps, guidance_scale=0.0, width=0, height=0, sample_rate=rate, channels=1,
                         voices=voices)


def is_speech_ref_folder(path: Path) -> bool:
    """A ``speech-ref``-layout folder that is not the reference itself: a student of ``genaccel
    distill`` (its ``genaccel.json`` names ``SpeechRefModel``)."""
    return (path / "model.safetensors").is_file() and model_card(path).get("pipeline") == "SpeechRefModel"


def speech_ref_info(name: str, folder: Path, source: Source, description: str = "") -> ModelInfo:
    """A ``speech-ref``-layout folder (config.json + model.safetensors) as a served speech model."""
    from functools import partial

    from pipelines import speech_ref

    cfg = speech_ref.SpeechRefConfig.load(folder / "config.json")
    card = model_card(folder)
    if not description and card.get("distilled_from"):
        steps = f"{cfg.default_steps} step{'s' if cfg.default_steps != 1 else ''}"
        description = f"consistency student of {card['distilled_from']} ({steps})"
    return ModelInfo(name, "speech", Family.SPEECH_DIT, source, str(folder), "SpeechRefModel",
                     speech_defaults(cfg.default_steps, speech_ref.SpeechRefModel.sample_rate, tuple(cfg.voices)),
                     description, partial(speech_ref.SpeechRefModel.load, folder))

def tiny_video_models() -> dict[str, ModelInfo]:
    """The tiny offline video pipelines (``pipelines/tiny_video.py``): 64 px, a few frames."""
    from pipelines import tiny_video as tv
    from pipelines.two_stage import build_tiny_text_image_to_video

    def clip(frames: int, guidance: float = 5.0) -> ModelDefaults:
        return ModelDefaults(steps=10, guidance_scale=guidance, width=64, height=64, num_frames=frames, fps=8.0,
                             output_format="mp4")

    rows = [  # name, pipeline class, family, defaults, builder, what it is
        ("tiny-wan", "WanPipeline", Family.VIDEO_DIT, clip(9), tv.build_tiny_wan, "Wan 2.x text-to-video"),
        ("tiny-wan-i2v", "WanImageToVideoPipeline", Family.VIDEO_DIT, clip(9), tv.build_tiny_wan_i2v,
         "Wan 2.2-style image-to-video"),
        ("tiny-ltx", "LTXPipeline", Family.VIDEO_DIT, clip(9, 3.0), tv.build_tiny_ltx, "LTX-Video text-to-video"),
        ("tiny-ltx-i2v", "LTXImageToVideoPipeline", Family.VIDEO_DIT, clip(9, 3.0), tv.build_tiny_ltx_i2v,
         "LTX-Video image-to-video"),
        ("tiny-animatediff", "AnimateDiffPipeline", Family.VIDEO_UNET, clip(8, 7.5), tv.build_tiny_animatediff,
         "AnimateDiff (SD UNet + motion adapter)"),
        ("tiny-latte", "LattePipeline", Family.VIDEO_DIT, clip(tv.LATTE_FRAMES, 4.5), tv.build_tiny_latte,
         "Latte text-to-video"),
        ("tiny-cogvideox", "CogVideoXPipeline", Family.VIDEO_DIT, clip(9, 6.0), tv.build_tiny_cogvideox,
         "CogVideoX text-to-video"),
        ("tiny-svd", "StableVideoDiffusionPipeline", Family.VIDEO_UNET, clip(6, 3.0), tv.build_tiny_svd,
         "Stable Video Diffusion image-to-video (no prompt)"),
        ("tiny-t2i2v", "TextImageToVideoPipeline", Family.OTHER, clip(9), build_tiny_text_image_to_video,
         "text-to-image (tiny-dit) then image-to-video (tiny-wan-i2v)"),
    ]
    return {name: ModelInfo(name, "video", family, "builtin", name, cls, defaults,
                            f"tiny random-weight {what} pipeline (tests, smoke runs)", builder)
            for name, cls, family, defaults, builder, what in rows}


def text_to_image_classes() -> set[str]:
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    return {cls.__name__ for cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()}


def family_of(pipeline_class: str, components: dict[str, Any]) -> Family:
    if "motion_adapter" in components or pipeline_class == "StableVideoDiffusionPipeline":
        return Family.VIDEO_UNET
    if "transformer" in components and any(k in pipeline_class for k in ("Wan", "LTX", "Latte", "CogVideo")):
        return Family.VIDEO_DIT
    if "Audio" in pipeline_class:  # Stable Audio's DiT; AudioLDM 2's audio UNet takes no image technique
        return Family.AUDIO_DIT if "transformer" in components else Family.OTHER
    if "unet" in components:
        return Family.SDXL_UNET if "XL" in pipeline_class else Family.SD_UNET
    if "transformer" in components:
        return Family.IMAGE_DIT
    return Family.OTHER


def load_plugins(settings: Settings) -> dict[str, ModelInfo]:
    """Import ``Settings.plugins``: each module may offer ``adapters() -> list`` (registered
    here, every time) and ``models() -> list[ModelInfo]``; returns those models by name."""
    import importlib

    from pipelines.modality import register_adapter

    found: dict[str, ModelInfo] = {}
    for name in settings.plugins:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ModelNotAvailable(f"plugin {name!r} (GENACCEL_PLUGINS) cannot be imported ({exc}); "
                                    "fix: install it or remove it from GENACCEL_PLUGINS") from None
        for adapter in getattr(module, "adapters", list)():
            register_adapter(adapter)
        for info in getattr(module, "models", list)():
            found[info.name] = info
    return found


class ModelRegistry:
    """Resolves names; ``allow_paths`` lets a name be any local folder (CLI: yes; API: no)."""

    def __init__(self, settings: Settings, *, allow_paths: bool = True) -> None:
        self.settings = settings
        self.allow_paths = allow_paths
        plugins = load_plugins(settings)
        self._plugins = list(plugins)
        self._builtins = {**builtin_models(), **reference_models(), **plugins}

    def add(self, info: ModelInfo) -> None:
        """Register a model programmatically (tests, plug-ins)."""
        self._builtins[info.name] = info

    def default_model(self, modality: str = "image") -> str:
        """``Settings.default_model`` if it serves ``modality``, else the best model shipped for it."""
        if self.settings.default_model:
            try:
                configured = self.resolve(self.settings.default_model)
            except GenAccelError:
                return self.settings.default_model  # its error is reported where it is used
            if configured.modality == modality:
                return configured.name
        for name in ("shapes-sd", "tiny-sd", "shapes-video"):
            if name in self._builtins and self._builtins[name].modality == modality:
                return name
        ordered = [*self._plugins, *self._builtins]  # an operator's plugin models first
        same = [name for name in ordered if self._builtins[name].modality == modality]
        return same[0] if same else "tiny-sd"

    def students(self, info: ModelInfo) -> list[ModelInfo]:
        """Distilled students of ``info`` served here (their ``genaccel.json`` names it as
        ``distilled_from``; a teacher's card may also list ``students``), fewest steps first."""
        found: dict[str, ModelInfo] = {}
        listed = model_card(Path(info.location)).get("students", []) if info.source != "builtin" else []
        for name, path in self._folder_models().items():
            card = model_card(path)
            if card.get("distilled_from") == info.name or name in listed:
                try:
                    found[name] = self._folder_info(name, path)
                except GenAccelError:
                    continue
        return sorted(found.values(), key=lambda s: (s.defaults.steps, s.name))

    def names(self) -> list[str]:
        return sorted({*self._builtins, *self._folder_models()})

    def available(self) -> list[ModelInfo]:
        infos = [self._builtins[n] for n in sorted(self._builtins)]
        infos += [self._folder_info(name, path) for name, path in sorted(self._folder_models().items())]
        return infos + self._cached_hub_models()

    def resolve(self, name: str) -> ModelInfo:
        if name in self._builtins:
            return self._builtins[name]
        folders = self._folder_models()
        if name in folders:
            return self._folder_info(name, folders[name])
        if PAIR_SEPARATOR in name and not Path(name).expanduser().exists():
            return self._pair_info(name)
        path = Path(name).expanduser()
        looks_like_path = name.startswith((".", "/", "~")) or (path.exists() and not HUB_ID.match(name))
        if looks_like_path:
            if not self.allow_paths:
                raise UnknownModel("model", name, "arbitrary paths are not served here",
                                   f"use a registered model: {', '.join(self.names())}")
            if not (path / "model_index.json").is_file() and not is_speech_ref_folder(path):
                raise UnknownModel("model", name, "is not a diffusers pipeline folder (no model_index.json)",
                                   "pass a folder saved with save_pretrained, or a registered model name")
            return self._folder_info(name, path)
        if HUB_ID.match(name):
            return self._hub_info(name)
        raise UnknownModel("model", name, "no such model",
                           f"use one of: {', '.join(self.names())} (see `genaccel models`)")

    def _pair_info(self, name: str) -> ModelInfo:
        """``IMAGE+VIDEO``: a text-to-image model draws the first frame, an image-to-video model
        animates it (the Magic 1-For-1 recipe, ``pipelines/two_stage.py``). The clip follows the
        video model's rules and defaults; a request with an init image skips the image stage."""
        parts = name.split(PAIR_SEPARATOR)
        fix = "name a text-to-image model and an image-to-video model, e.g. shapes-sd+tiny-wan-i2v"
        if len(parts) != 2 or not all(parts):
            raise UnknownModel("model", name, "a pair names exactly two models, IMAGE+VIDEO", fix)
        image, video = (self.resolve(part) for part in parts)
        if image.modality != "image" or image.family == Family.OTHER:
            raise UnknownModel("model", name, f"its first model {image.name} is not a text-to-image model "
                               f"(it makes {image.modality})", fix)
        from pipelines.video_rules import VIDEO_CLASSES, kind_of

        if video.modality != "video" or video.pipeline_class not in VIDEO_CLASSES \
                or kind_of(video.pipeline_class).image != "required" or video.stages is not None:
            raise UnknownModel("model", name, f"its second model {video.name} is not an image-to-video model "
                               f"({video.pipeline_class})", fix)

        def build() -> Any:
            import torch

            from pipelines.loader import load_pipeline
            from pipelines.two_stage import TextImageToVideoPipeline

            cpu = torch.device("cpu")
            return TextImageToVideoPipeline(load_pipeline(image, cpu, torch.float32),
                                            load_pipeline(video, cpu, torch.float32))

        # source "builtin": nothing of its own on disk (each stage loads from its own source)
        return ModelInfo(name, "video", Family.OTHER, "builtin", name, "TextImageToVideoPipeline",
                         video.defaults, f"{image.name} draws the first frame, {video.name} animates it",
                         build, stages=(image, video))

    # -- folders ---------------------------------------------------------------------------
    def _folder_models(self) -> dict[str, Path]:
        """Pipeline folders (and ``speech-ref`` students) served by folder name: ``Settings.model_dirs``,
        ``home/models`` (where ``genaccel distill`` writes by default) and the non-reference folders of
        ``assets/``."""
        found: dict[str, Path] = {}
        for root in [*self.settings.model_dirs, self.settings.home / "models", ASSETS]:
            if Path(root).is_dir():
                for sub in sorted(Path(root).iterdir()):
                    served = (sub / "model_index.json").is_file() or is_speech_ref_folder(sub)
                    if served and sub.name not in self._builtins:
                        found.setdefault(sub.name, sub)
        return found

    def _folder_info(self, name: str, path: Path, source: Source = "folder") -> ModelInfo:
        if is_speech_ref_folder(path):
            return speech_ref_info(name, path, source)
        cls, components = pipeline_parts(path)
        if cls == "MelDiTPipeline":  # music-ref's students
            from pipelines.music_models import mel_dit_info

            return mel_dit_info(name, path, source)
        from pipelines.modality import modality_of_class

        modality = modality_of_class(cls)
        if modality is None:
            raise UnknownModel("model", name, f"its pipeline class {cls} is not a text-to-image pipeline "
                               "genaccel serves yet", "use a Stable Diffusion, SDXL, SD3, PixArt, Flux or SANA model")
        defaults = defaults_from_folder(path, components)
        card = model_card(path)
        if card.get("defaults"):
            given = {k: v for k, v in card["defaults"].items() if v is not None}
            defaults = ModelDefaults(**{**vars(defaults), **given})
        description = f"{cls} from {path}"
        if card.get("distilled_from"):
            description = f"{card['mode']} student of {card['distilled_from']} ({path})"
        elif card.get("pruned_from"):
            description = f"{card['prune']['ratio']:.0%} pruned from {card['pruned_from']} ({path})"
        return ModelInfo(name, modality, family_of(cls, components), source, str(path), cls, defaults, description)

    # -- hub cache -------------------------------------------------------------------------
    def _hub_info(self, repo_id: str) -> ModelInfo:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(repo_id, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            raise ModelNotAvailable(
                f"model {repo_id!r} is not in the local Hugging Face cache and genaccel never downloads at run "
                f"time; fix: run `hf download {repo_id}` on a machine with network access (then copy the "
                "cache), or pass a local pipeline folder"
            ) from None
        return self._folder_info(repo_id, path, source="hub")

    def _cached_hub_models(self) -> list[ModelInfo]:
        try:
            from huggingface_hub import scan_cache_dir

            repos = scan_cache_dir().repos
        except Exception:
            return []
        infos = []
        for repo in repos:
            if repo.repo_type != "model":
                continue
            try:
                infos.append(self._hub_info(repo.repo_id))
            except Exception:
                continue
        return infos


def pipeline_parts(path: Path) -> tuple[str, dict[str, Any]]:
    """The checked pipeline class name and component entries of a pipeline folder."""
    index = check_pipeline_folder(path)
    return index["_class_name"], {k: v for k, v in index.items() if not k.startswith("_")}


def model_card(path: Path) -> dict[str, Any]:
    """``genaccel.json`` beside ``model_index.json``: defaults and provenance written by our tools."""
    try:
        return dict(json.loads((path / "genaccel.json").read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return {}


OWN_PIPELINES = ("MelDiTPipeline",)
"""genaccel's own pipeline classes (in ``pipelines/``, not remote code) whose folders are served."""


def check_pipeline_folder(path: Path) -> dict[str, Any]:
    """Read ``model_index.json`` and refuse custom code or pickle-only weights."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnsafeModel(f"model folder {path} has an unreadable model_index.json ({exc}); "
                          "fix: re-save the pipeline with save_pretrained") from None
    cls = index.get("_class_name")
    import diffusers

    if not isinstance(cls, str) or not (hasattr(diffusers, cls) or cls in OWN_PIPELINES):
        raise UnsafeModel(f"model folder {path} asks for pipeline class {cls!r}, which is not part of diffusers; "
                          "genaccel never runs remote or custom code; fix: use a standard diffusers pipeline")
    for comp, spec in index.items():
        if comp.startswith("_") or not isinstance(spec, list) or len(spec) != 2:
            continue
        library = spec[0]
        if library not in SAFE_LIBRARIES:
            raise UnsafeModel(f"component {comp!r} of {path} comes from library {library!r}; only diffusers, "
                              "transformers and genaccel's own classes are loaded (no custom code); "
                              "fix: use a standard pipeline")
        folder = path / comp
        if folder.is_dir():
            files = [f for f in folder.iterdir() if f.is_file()]
            pickles = [f.name for f in files if f.suffix in PICKLE_SUFFIXES]
            if pickles and not any(f.suffix == ".safetensors" for f in files):
                raise UnsafeModel(f"component {comp!r} of {path} has only pickled weights ({', '.join(pickles)}); "
                                  "genaccel loads safetensors only; fix: convert the weights to safetensors")
    return index


def defaults_from_folder(path: Path, components: dict[str, Any]) -> ModelDefaults:
    """Native resolution from the denoiser's sample size and the VAE's downscale factor."""
    def config(name: str) -> dict[str, Any]:
        try:
            return json.loads((path / name / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    vae = config("vae")
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    denoiser = config("unet") if "unet" in components else config("transformer")
    sample = denoiser.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, list) else sample
    size = max(64, min(2048, int(sample) * scale // 8 * 8))
    is_dit = "transformer" in components
    return ModelDefaults(steps=20 if is_dit else 30, guidance_scale=4.5 if is_dit else 7.5, width=size, height=size)


def weights_digest(info: ModelInfo) -> str:
    """A digest of the weights ``info`` loads: name, size and modification time of every weight
    file in its folder (cheap for multi-GB models; a changed file changes it), or the genaccel
    version for built-in models (built from seeded configs)."""
    import hashlib

    from genaccel import __version__

    h = hashlib.sha256(f"{info.name}\0{info.pipeline_class}".encode())
    if info.stages is not None:
        for stage in info.stages:
            h.update(weights_digest(stage).encode())
        return h.hexdigest()[:32]
    if info.source == "builtin":
        h.update(f"builtin\0{__version__}".encode())
        return h.hexdigest()[:32]
    root = Path(info.location)
    for path in sorted(root.rglob("*")):
        if path.suffix in (".safetensors", ".json") and path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]
