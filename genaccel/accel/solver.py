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

KINDS = ("dpmsolver++", "unipc", "euler", "ddim")


@dataclass(frozen=True)
class SolverConfig:
    """Args:
        kind: ``dpmsolver++`` (2nd-order multistep), ``unipc``, ``euler`` or ``ddim``.
        karras: Karras sigma spacing (DPM-Solver++ only).
    """

    kind: str = "dpmsolver++"
    karras: bool = False
    name: ClassVar[str] = "solver"
    families: ClassVar[tuple[str, ...]] = ("sd-unet", "sdxl-unet", "image-dit")
    alternatives: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {', '.join(KINDS)}")


class _SolverHandle:
    def __init__(self, pipe: Any, original: Any) -> None:
        self.pipe, self.original = pipe, original

    def reset(self) -> None:
        pass  # schedulers reset themselves in set_timesteps at every call

    def remove(self) -> None:
        self.pipe.scheduler = self.original


@technique(SolverConfig)
def apply_solver(pipe: Any, config: SolverConfig) -> _SolverHandle:
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    original = pipe.scheduler
    if "FlowMatch" in type(original).__name__:
        raise InvalidRequest("techniques", "solver", f"does not fit the flow-matching scheduler "
                             f"{type(original).__name__}", "use the model's own scheduler with fewer steps")
    cls = {"dpmsolver++": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler,
           "euler": EulerDiscreteScheduler, "ddim": DDIMScheduler}[config.kind]
    extra: dict[str, Any] = {}
    if config.kind == "dpmsolver++":
        extra = {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": config.karras,
                 "final_sigmas_type": "zero"}
    pipe.scheduler = cls.from_config(original.config, **extra)
    return _SolverHandle(pipe, original)
