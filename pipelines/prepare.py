"""Turn a client's request into a fully resolved one, before anything is queued.

Validation (limits, model, modality, profile, techniques, img2img support) happens here, and
every default is made explicit (model, steps, size, guidance, seed), so the stored request alone
reproduces the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genaccel.accel import check_family, parse_technique
from genaccel.accel.calibration import magcache_ratios
from genaccel.accel.lora import LoRAConfig, check_lora
from genaccel.errors import InvalidRequest, UnknownProfile, UnsupportedModality
from genaccel.profiles import PROFILES
from genaccel.settings import Settings
from genaccel.spec import GenParams, JobRequest, new_seed, validate_request
from pipelines.modality import ModalityAdapter, adapter_for, served_modalities
from pipelines.registry import ModelInfo, ModelRegistry


def prepare_request(request: JobRequest, registry: ModelRegistry, settings: Settings) -> tuple[JobRequest, ModelInfo]:
    """Validate ``request`` and fill in every default. Raises a ``GenAccelError`` subclass."""
    validate_request(request, settings.limits)
    served = served_modalities()
    if request.model is None and request.modality not in served:
        raise UnsupportedModality(
            "modality", request.modality, f"no {request.modality} pipeline is available in this version",
            f"use --modality {' or '.join(served)}",
        )
    info = registry.resolve(request.model or registry.default_model(request.modality))
    if info.modality != request.modality:
        raise InvalidRequest("model", info.name, f"serves {info.modality}, not {request.modality}",
                             f"pick a {request.modality} model (see `genaccel models`) "
                             f"or pass --modality {info.modality}")
    adapter = adapter_for(info)
    if request.profile not in PROFILES:
        raise UnknownProfile("profile", request.profile, "no such profile",
                             f"use one of: {', '.join(PROFILES)} (see `genaccel profiles`)")
    for config in technique_configs(request, info.family):
        check_family(config, info.family)
        if isinstance(config, LoRAConfig):
            check_lora(config, info.family, settings)
        if config.name == "magcache" and not config.ratios and info.source != "builtin" and \
                magcache_ratios(Path(info.location), settings) is None:
            raise InvalidRequest("techniques", "magcache", f"has no calibrated ratios for {info.name}",
                                 f"run `genaccel calibrate --model {info.name}` once, or use fbcache or taylorseer")
    p = request.params
    recipe = PROFILES[request.profile].recipe(info.family)
    d = info.defaults
    guidance = p.guidance_scale if p.guidance_scale is not None else d.guidance_scale
    if guidance <= 1 and any(s.name == "fastercache" for s in [*recipe.techniques, *request.techniques]):
        raise InvalidRequest("techniques", "fastercache", f"needs classifier-free guidance and guidance_scale="
                             f"{guidance:g} runs none", "use fbcache or taylorseer, or pass --guidance above 1")
    for name in adapter_fields_unused(adapter, request):
        raise InvalidRequest(name, getattr(p, name), f"does not apply to {info.name} ({info.modality})",
                             f"drop {name}")
    params = GenParams(**{
        **p.model_dump(),
        "steps": p.steps if p.steps is not None else recipe.steps or d.steps,
        "guidance_scale": guidance,
        "seed": p.seed if p.seed is not None else new_seed(),
        **adapter.prepare(request, info, settings),
    })
    return request.model_copy(update={"model": info.name, "params": params}), info


COMMON_FIELDS = frozenset({"steps", "guidance_scale", "seed", "num_outputs", "output_format"})


def adapter_fields_unused(adapter: ModalityAdapter, request: JobRequest) -> list[str]:
    """Parameters the request sets that ``adapter`` would silently ignore."""
    honoured = COMMON_FIELDS | set(adapter.fields)
    return [name for name, value in request.params.model_dump(exclude_none=True).items()
            if name not in honoured and not (name == "num_outputs" and value == 1)]


def technique_configs(request: JobRequest, family: str) -> list[Any]:
    """The technique configs to apply: the profile's recipe for ``family``, then the request's own."""
    specs = [*PROFILES[request.profile].recipe(family).techniques, *request.techniques]
    return [parse_technique(spec) for spec in specs]


CACHES = frozenset({"deepcache", "fbcache", "pab", "taylorseer", "tome", "todo"})


def technique_warnings(request: JobRequest, configs: list[Any]) -> list[str]:
    """Combinations that work but barely help, said in the job's metadata rather than refused."""
    steps = request.params.steps or 0
    guidance = request.params.guidance_scale or 0.0
    consistency = [c.kind for c in configs if c.name == "solver" and c.kind in ("lcm", "tcd")]
    if consistency and guidance > 2:
        return [f"{consistency[0]} sampling expects a consistency-distilled model or LoRA and guidance 1-2; "
                f"guidance_scale={guidance:g} runs classifier-free guidance at full strength (pass --guidance 1.5)"]
    cached = [c.name for c in configs if c.name in CACHES]
    if cached and 0 < steps <= 8 and any(c.name in ("deepcache", "fbcache", "pab", "taylorseer") for c in configs):
        return [f"{', '.join(cached)} at {steps} steps saves little and costs quality: caching reuses work "
                "between neighbouring steps, and few-step sampling leaves little to reuse"]
    return []
