"""``solver``: a faster ODE solver in place of the model's scheduler (DPM-Solver++, UniPC,
Euler), so fewer steps reach the same picture (Lu et al. 2022; Zhao et al. 2023). Training-free;
it is what profiles that set their own step count use.

The new scheduler is built ``from_config`` of the model's own (same betas, prediction type and
timestep spacing), so it fits any epsilon- or v-prediction model. ``remove()`` puts the original
scheduler object back.

Flow-matching models (SD3, Flux, SANA) get few-step flow schedules: ``euler`` is diffusers'
``FlowMatchEulerDiscreteScheduler`` and ``dpmsolver++``/``unipc`` run on flow sigmas
(``use_flow_sigmas``, as SANA ships them); ``spacing="trailing"`` spaces the sigmas evenly from
1 down to (but not including) 0 before the shift, so a 2-4 step schedule does not spend a step
at sigma 0.001 (the default spacing's last step); ``shift`` replaces the model's time shift.
Consistency samplers and DDIM are refused there: they need a noise-prediction schedule. Wan ships
UniPC on flow sigmas (``prediction_type="flow_prediction"``, ``flow_shift``): it counts as a
flow-matching scheduler too, so few-step video LoRAs (CausVid/LightX2V-style) get ``euler`` with
trailing spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patches, patching
from genaccel.accel.rules import RequestContext, checks, warns
from genaccel.errors import InvalidRequest
from genaccel.families import UNETS, Family

KINDS = ("dpmsolver++", "unipc", "euler", "ddim", "lcm", "tcd")
CONSISTENCY = ("lcm", "tcd")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class SolverConfig:
    """Args:
        kind: ``dpmsolver++`` (2nd-order multistep), ``unipc``, ``euler``, ``ddim``, or the
            consistency samplers ``lcm`` (multistep consistency) and ``tcd`` for consistency-
            distilled students and LoRAs (LCM-LoRA, TCD-LoRA, Hyper-SD).
        karras: Karras sigma spacing (DPM-Solver++ only).
        gamma: TCD's stochasticity (0 = deterministic, 0.3 recommended).
        spacing: timestep spacing; ``trailing`` keeps few-step schedules ending at the noisiest
            timestep (what few-step samplers want); ``None`` keeps the model's.
        shift: flow-matching models only: the time shift (SD3 uses 3.0); ``None`` keeps the model's.
    """

    kind: str = "dpmsolver++"
    karras: bool = False
    gamma: float = 0.3
    spacing: str | None = None
    shift: float | None = None
    name: ClassVar[str] = "solver"
    families: ClassVar[tuple[Family, ...]] = (*UNETS, Family.VIDEO_UNET, Family.IMAGE_DIT, Family.VIDEO_DIT)
    alternatives: ClassVar[dict[Family, str]] = {}

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {', '.join(KINDS)}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma} must be between 0 and 1")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ValueError(f"spacing={self.spacing!r} must be one of {', '.join(SPACINGS)}")
        if self.shift is not None and not 0 < self.shift <= 20:
            raise ValueError(f"shift={self.shift} must be in (0, 20]")


class _SolverHandle:
    def __init__(self, patches: Patches, pipe: Any, original: Any) -> None:
        self.patches, self.pipe, self.original = patches, pipe, original

    def reset(self) -> None:
        pass  # schedulers reset themselves in set_timesteps at every call

    def remove(self) -> None:
        self.patches.undo()  # the original scheduler object again


def _fixed_gamma(scheduler: Any, gamma: float) -> None:
    """TCD reads its gamma from ``step(eta=...)``, which pipelines fill from their own ``eta``
    argument (0 by default); pin it on this scheduler instance."""
    step = scheduler.step

    def step_with_gamma(model_output: Any, timestep: Any, sample: Any, eta: float = gamma, generator: Any = None,
                        return_dict: bool = True) -> Any:
        return step(model_output, timestep, sample, eta=gamma, generator=generator, return_dict=return_dict)

    scheduler.step = step_with_gamma


@technique(SolverConfig)
def apply_solver(pipe: Any, config: SolverConfig) -> _SolverHandle:
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        LCMScheduler,
        TCDScheduler,
        UniPCMultistepScheduler,
    )

    original = pipe.scheduler
    if is_flow(original):
        scheduler = flow_scheduler(original, config)
    else:
        if config.shift is not None:
            raise InvalidRequest("techniques.solver", config.shift, "shift applies to flow-matching models only",
                                 f"drop shift for the {type(original).__name__} of this model")
        cls = {"dpmsolver++": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler,
               "euler": EulerDiscreteScheduler, "ddim": DDIMScheduler, "lcm": LCMScheduler,
               "tcd": TCDScheduler}[config.kind]
        extra: dict[str, Any] = {}
        if config.kind == "dpmsolver++":
            extra = {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": config.karras,
                     "final_sigmas_type": "zero"}
        if config.spacing is not None:
            extra["timestep_spacing"] = config.spacing
        scheduler = cls.from_config(original.config, **extra)
        if config.kind == "tcd":
            _fixed_gamma(scheduler, config.gamma)
    with patching(pipe, config) as patches:
        patches.set_attribute(pipe, "scheduler", scheduler)
    return _SolverHandle(patches, pipe, original)


@checks(SolverConfig)
def check_solver(config: SolverConfig, context: RequestContext) -> None:
    """The flow-matching refusals of ``apply_solver``, before queueing, where the model folder names
    its scheduler."""
    scheduler = context.component_class("scheduler")
    if scheduler is None:
        return
    if "FlowMatch" in scheduler and config.kind not in FLOW_KINDS:
        raise InvalidRequest("techniques.solver", config.kind, f"does not fit the flow-matching scheduler "
                             f"{scheduler}", "use solver kind=euler with spacing=trailing (a few-step flow "
                             "schedule), or a flow-matching model's own distilled checkpoint")
    if "FlowMatch" not in scheduler and config.shift is not None:
        raise InvalidRequest("techniques.solver", config.shift, "shift applies to flow-matching models only",
                             f"drop shift for the {scheduler} of this model")


@warns(SolverConfig)
def consistency_warning(config: SolverConfig, context: RequestContext) -> list[str]:
    if config.kind in CONSISTENCY and context.guidance_scale > 2:
        return [f"{config.kind} sampling expects a consistency-distilled model or LoRA and guidance 1-2; "
                f"guidance_scale={context.guidance_scale:g} runs classifier-free guidance at full strength "
                "(pass --guidance 1.5)"]
    return []


FLOW_KINDS = ("euler", "dpmsolver++", "unipc")


def is_flow(scheduler: Any) -> bool:
    """A flow-matching schedule: diffusers' FlowMatch schedulers, or a multistep solver on flow
    sigmas (Wan's UniPC)."""
    config = scheduler.config
    return "FlowMatch" in type(scheduler).__name__ or config.get("prediction_type") == "flow_prediction"


def flow_scheduler(original: Any, config: SolverConfig) -> Any:
    """A few-step schedule for a flow-matching model (see the module docstring)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    name = type(original).__name__
    if config.kind not in FLOW_KINDS:
        raise InvalidRequest("techniques.solver", config.kind, f"does not fit the flow-matching scheduler {name}",
                             "use solver kind=euler with spacing=trailing (a few-step flow schedule), or a "
                             "flow-matching model's own distilled checkpoint")
    own = original.config.get("shift", original.config.get("flow_shift", 1.0))
    shift = config.shift if config.shift is not None else float(own or 1.0)
    if config.kind == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(original.config, shift=shift)
        if config.spacing == "trailing":
            _trailing_flow_sigmas(scheduler)
        return scheduler
    cls = DPMSolverMultistepScheduler if config.kind == "dpmsolver++" else UniPCMultistepScheduler
    extra = {"algorithm_type": "dpmsolver++", "solver_order": 2} if config.kind == "dpmsolver++" else {}
    scheduler = cls.from_config(
        {k: v for k, v in original.config.items() if k not in ("shift", "flow_shift")}, use_flow_sigmas=True,
        prediction_type="flow_prediction", flow_shift=shift, final_sigmas_type="zero", **extra)
    _ignore_pipeline_sigmas(scheduler)
    return scheduler


def _trailing_flow_sigmas(scheduler: Any) -> None:
    """Sigmas ``linspace(1, 0, n + 1)[:-1]`` (shifted by the scheduler) whatever the pipeline passes."""
    set_timesteps = scheduler.set_timesteps

    def trailing(num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None, mu: Any = None,
                 timesteps: Any = None) -> None:
        n = num_inference_steps or len(sigmas if sigmas is not None else timesteps)
        set_timesteps(num_inference_steps=n, device=device, sigmas=np.linspace(1.0, 0.0, n + 1)[:-1].tolist(), mu=mu)

    scheduler.set_timesteps = trailing


def _ignore_pipeline_sigmas(scheduler: Any) -> None:
    """Flux-style pipelines pass their own Euler sigmas (and ``mu``); a multistep flow solver
    makes its own from the step count, so it takes and ignores them."""
    set_timesteps = scheduler.set_timesteps

    def own_sigmas(num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None, mu: Any = None,
                   timesteps: Any = None) -> None:
        n = num_inference_steps or len(sigmas if sigmas is not None else timesteps)
        set_timesteps(num_inference_steps=n, device=device)

    scheduler.set_timesteps = own_sigmas
