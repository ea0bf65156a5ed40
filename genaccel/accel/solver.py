"""``solver``: a faster ODE solver in place of the model's scheduler (DPM-Solver++, UniPC,
Euler), so fewer steps reach the same picture (Lu et al. 2022; Zhao et al. 2023). Training-free;
it is what profiles that set their own step count use.

The new scheduler is built ``from_config`` of the model's own (same betas, prediction type and
timestep spacing), so it fits any epsilon- or v-prediction model; flow-matching schedulers are
refused with the alternative. ``remove()`` puts the original scheduler object back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from genaccel.accel.base import technique
from genaccel.errors import InvalidRequest

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
    """

    kind: str = "dpmsolver++"
    karras: bool = False
    gamma: float = 0.3
    spacing: str | None = None
    name: ClassVar[str] = "solver"
    families: ClassVar[tuple[str, ...]] = ("sd-unet", "sdxl-unet", "image-dit")
    alternatives: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {', '.join(KINDS)}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma} must be between 0 and 1")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ValueError(f"spacing={self.spacing!r} must be one of {', '.join(SPACINGS)}")


class _SolverHandle:
    def __init__(self, pipe: Any, original: Any) -> None:
        self.pipe, self.original = pipe, original

    def reset(self) -> None:
        pass  # schedulers reset themselves in set_timesteps at every call

    def remove(self) -> None:
        self.pipe.scheduler = self.original


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
    if "FlowMatch" in type(original).__name__:
        raise InvalidRequest("techniques", "solver", f"does not fit the flow-matching scheduler "
                             f"{type(original).__name__}", "use the model's own scheduler with fewer steps")
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
    pipe.scheduler = scheduler
    return _SolverHandle(pipe, original)
