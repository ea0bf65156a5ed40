"""``shallow_start``: begin denoising from an intermediate step of a cheap prior output
(DiffSinger's shallow diffusion mechanism, Liu et al. 2022; img2img's ``strength`` is the same idea).

The prior is a draft of the same request by the same model with a few-step solver
(DPM-Solver++, trailing spacing, ``prior_steps`` steps). It is noised to the timestep where the
last ``strength`` of the model's own schedule begins, and the model's own sampler runs only those
steps. With ``strength=0.4`` of 50 steps and a 4-step draft, a job runs 24 denoiser steps
instead of 50 and keeps the model's own sampler for the details.

Every sample's draft and re-noising come from its own generator, so a result does not depend on
batching. Requests with an init image are already image-to-image (their ``strength`` is the same
knob) and run unchanged. Flow-matching schedulers are refused (they add noise differently);
use a few-step flow schedule (``solver``) there.

Why our own: diffusers has no shallow-start option for text-to-image pipelines; this wraps the
pipeline call of one instance (``hooks.Patches.call_wrapper``, applied by ``pipelines.image``) and the
``set_timesteps`` of the scheduler in use for the length of one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genaccel.accel.base import technique
from genaccel.accel.hooks import Patched, patching
from genaccel.accel.rules import RequestContext, checks
from genaccel.errors import InvalidRequest
from genaccel.families import UNETS, Family

Call = Callable[..., Any]


@dataclass(frozen=True)
class ShallowStartConfig:
    """Args:
        strength: share of the model's own schedule that runs after the draft (0 < strength < 1).
        prior_steps: steps of the few-step draft (2-8; PixArt pipelines treat one step as a special case).
    """

    strength: float = 0.4
    prior_steps: int = 4
    name: ClassVar[str] = "shallow_start"
    families: ClassVar[tuple[Family, ...]] = (*UNETS, Family.IMAGE_DIT)
    alternatives: ClassVar[dict[Family, str]] = {}

    def __post_init__(self) -> None:
        if not 0 < self.strength < 1:
            raise ValueError(f"strength={self.strength} must be between 0 and 1 (exclusive)")
        if not 2 <= self.prior_steps <= 8:
            raise ValueError(f"prior_steps={self.prior_steps} must be between 2 and 8")


def _skipped(steps: int, strength: float) -> int:
    return min(steps - 1, max(0, round(steps * (1 - strength))))


class _Truncated:
    """For one call: ``set_timesteps`` of ``scheduler`` keeps only the schedule's last steps."""

    def __init__(self, scheduler: Any, skip: int) -> None:
        self.scheduler, self.skip = scheduler, skip

    def __enter__(self) -> Any:
        scheduler, skip = self.scheduler, self.skip
        self.patched = vars(scheduler).get("set_timesteps")  # another technique's instance patch, if any
        original = scheduler.set_timesteps

        def truncated(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            sigmas = getattr(scheduler, "sigmas", None)
            count = len(scheduler.timesteps)
            scheduler.timesteps = scheduler.timesteps[skip:]
            if sigmas is not None and len(sigmas) == count + 1:
                scheduler.sigmas = sigmas[skip:]

        scheduler.set_timesteps = truncated
        return scheduler

    def __exit__(self, *exc: Any) -> None:
        if self.patched is not None:
            self.scheduler.set_timesteps = self.patched
        else:
            del self.scheduler.set_timesteps  # the class's method again


def _draft_scheduler(scheduler: Any) -> Any:
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(scheduler.config, algorithm_type="dpmsolver++", solver_order=2,
                                                   timestep_spacing="trailing", final_sigmas_type="zero")


def _shallow_call(pipe: Any, config: ShallowStartConfig, call: Call) -> Call:
    def shallow(**kwargs: Any) -> Any:
        steps = int(kwargs.get("num_inference_steps") or 0)
        skip = _skipped(steps, config.strength)
        if skip == 0 or "image" in kwargs:
            return call(**kwargs)
        own = pipe.scheduler
        draft_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("callback")}
        draft_kwargs.update(num_inference_steps=config.prior_steps, output_type="latent")
        pipe.scheduler = _draft_scheduler(own)
        try:
            draft = call(**draft_kwargs).images
        finally:
            pipe.scheduler = own
        gens = kwargs.get("generator")
        gens = gens if isinstance(gens, list) else [gens] * len(draft)
        noise = torch.stack([torch.randn(draft.shape[1:], generator=g, dtype=torch.float32) for g in gens])
        with _Truncated(own, skip) as scheduler:
            scheduler.set_timesteps(steps, device=draft.device)
            start = scheduler.timesteps[:1].repeat(len(draft))
            noisy = scheduler.add_noise(draft.float(), noise.to(draft.device), start)
            latents = (noisy / scheduler.init_noise_sigma).to(draft.dtype)
            return call(**{**kwargs, "latents": latents})

    return shallow


def _flow_refusal(scheduler: str) -> InvalidRequest:
    return InvalidRequest("techniques", "shallow_start", f"does not fit the scheduler {scheduler} "
                          "(no noise-prediction add_noise)",
                          "use solver kind=euler with spacing=trailing for a few-step flow schedule")


@technique(ShallowStartConfig)
def apply_shallow_start(pipe: Any, config: ShallowStartConfig) -> Patched:
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "add_noise") or "FlowMatch" in type(scheduler).__name__:
        raise _flow_refusal(type(scheduler).__name__)
    if getattr(scheduler, "order", 1) != 1:
        raise InvalidRequest("techniques", "shallow_start", f"does not fit the order-{scheduler.order} scheduler "
                             f"{type(scheduler).__name__}", "use a DDIM, DPM-Solver++ or Euler scheduler")

    def wrapper(call: Call) -> Call:
        return _shallow_call(pipe, config, call)

    with patching(pipe, config) as patches:
        patches.call_wrapper(wrapper)
    return Patched(patches)


@checks(ShallowStartConfig)
def check_shallow_start(config: ShallowStartConfig, context: RequestContext) -> None:
    """Refuse a flow-matching model before queueing, where its folder names the scheduler (a solver
    technique keeps a flow model on a flow schedule)."""
    scheduler = context.component_class("scheduler")
    if scheduler is not None and "FlowMatch" in scheduler:
        raise _flow_refusal(scheduler)
