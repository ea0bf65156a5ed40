"""Turn a client's request into a fully resolved one, before anything is queued.

Validation (limits, model, modality, profile, techniques, img2img support) happens here, and
every default is made explicit (model, steps, size, guidance, seed), so the stored request alone
reproduces the output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from genaccel.accel import RequestContext, check_techniques, parse_technique
from genaccel.accel import technique_warnings as accel_warnings
from genaccel.errors import InvalidRequest, UnknownProfile, UnsupportedModality
from genaccel.profiles import PROFILES, Recipe
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
    if request.profile not in PROFILES:
        raise UnknownProfile("profile", request.profile, "no such profile",
                             f"use one of: {', '.join(PROFILES)} (see `genaccel profiles`)")
    if PROFILES[request.profile].student and request.swapped_from is None:
        students = registry.students(info)
        if students:  # the student's own sampler, steps and guidance: the request's explicit values still win
            request = request.model_copy(update={"model": students[0].name, "swapped_from": info.name})
            info = students[0]
    adapter = adapter_for(info)
    p = request.params
    recipe = profile_recipe(request, info.family)
    d = info.defaults
    guidance = p.guidance_scale if p.guidance_scale is not None else d.guidance_scale
    steps = p.steps if p.steps is not None else recipe.steps or d.steps
    check_techniques(technique_configs(request, info.family), RequestContext(
        family=info.family, model=info.name, location=None if info.source == "builtin" else Path(info.location),
        pipeline_class=info.pipeline_class, guidance_scale=guidance, steps=steps, settings=settings,
        profile=request.profile, from_profile=len(recipe.techniques)))
    for name in adapter_fields_unused(adapter, request):
        raise InvalidRequest(name, getattr(p, name), f"does not apply to {info.name} ({info.modality})",
                             f"drop {name}")
    params = GenParams(**{
        **p.model_dump(),
        "steps": steps,
        "guidance_scale": guidance,
        "seed": p.seed if p.seed is not None else new_seed(),
        **adapter.prepare(request, info, settings),
    })
    check_img2img_schedule(params)
    check_one_step(params, info)
    return request.model_copy(update={"model": info.name, "params": params}), info


#: Pipelines whose one-step path reads the scheduler's predicted clean sample (``step(...)[1]``),
#: which only consistency schedulers return.
ONE_STEP_NEEDS_CONSISTENCY = frozenset({"PixArtAlphaPipeline", "PixArtSigmaPipeline", "TextImageToVideoPipeline"})
CONSISTENCY_SCHEDULERS = frozenset({"LCMScheduler", "TCDScheduler"})


def check_one_step(params: GenParams, info: ModelInfo) -> None:
    """PixArt pipelines take a special path at one step that only LCM/TCD schedulers serve (with
    DPM-Solver it fails deep in the pipeline with ``IndexError``): refused before queueing."""
    if params.steps != 1 or info.pipeline_class not in ONE_STEP_NEEDS_CONSISTENCY:
        return
    scheduler = "DPMSolverMultistepScheduler"
    if info.source != "builtin":
        try:
            config = json.loads((Path(info.location) / "scheduler" / "scheduler_config.json").read_text())
            scheduler = str(config.get("_class_name", scheduler))
        except (OSError, ValueError):
            pass
    if scheduler not in CONSISTENCY_SCHEDULERS:
        raise InvalidRequest("steps", 1, f"{info.name} ({info.pipeline_class} with {scheduler}) cannot sample in "
                             "one step: its one-step path needs a consistency scheduler (LCM, TCD)",
                             "pass --steps 2 or more, or use a distilled student (--profile turbo)")


def check_img2img_schedule(params: GenParams) -> None:
    """Image-to-image denoises only the last ``int(steps * strength)`` steps of its schedule
    (diffusers' img2img pipelines); when that is 0 nothing is denoised and the VAE is handed an
    empty latent ("cannot reshape tensor of 0 elements"), so the request is refused here."""
    if params.init_image is None or params.strength is None or params.steps is None:
        return
    steps, strength = params.steps, params.strength
    if int(steps * strength) >= 1:
        return
    min_steps = math.ceil(1 / strength)
    while int(min_steps * strength) < 1:  # float rounding: 3 x (1/3) may be 0.999...
        min_steps += 1
    raise InvalidRequest("strength", strength, f"with steps={steps}, strength={strength:g} denoises "
                         f"int({steps} x {strength:g}) = 0 steps (image-to-image runs the last steps x strength "
                         "steps of the schedule)", f"raise steps to at least {min_steps}, or strength to at "
                         f"least {1 / steps:g}")


COMMON_FIELDS = frozenset({"steps", "guidance_scale", "seed", "num_outputs", "output_format"})


def adapter_fields_unused(adapter: ModalityAdapter, request: JobRequest) -> list[str]:
    """Parameters the request sets that ``adapter`` would silently ignore."""
    honoured = COMMON_FIELDS | set(adapter.fields)
    return [name for name, value in request.params.model_dump(exclude_none=True).items()
            if name not in honoured and not (name == "num_outputs" and value == 1)]


def profile_recipe(request: JobRequest, family: str) -> Recipe:
    """The profile's recipe for ``family``; none when the profile swapped in a distilled student."""
    return Recipe() if request.swapped_from else PROFILES[request.profile].recipe(family)


def technique_configs(request: JobRequest, family: str) -> list[Any]:
    """The technique configs to apply: the profile's recipe for ``family``, then the request's own."""
    specs = [*profile_recipe(request, family).techniques, *request.techniques]
    return [parse_technique(spec) for spec in specs]


def technique_warnings(request: JobRequest, configs: list[Any]) -> list[str]:
    """Combinations that work but barely help, said in the job's metadata rather than refused
    (each technique's ``@warns`` function in ``genaccel/accel/``)."""
    context = RequestContext(guidance_scale=request.params.guidance_scale or 0.0, steps=request.params.steps or 0,
                             profile=request.profile)
    return accel_warnings(configs, context)

