"""Image adapter: runs any diffusers text-to-image pipeline, and its img2img variant when the
request carries an init image (built with ``from_pipe``, sharing the loaded components)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from genaccel.spec import JobRequest

StepCallback = Callable[[int, int], None]


def supports_img2img(pipeline_class: str) -> bool:
    return img2img_class(pipeline_class) is not None


def img2img_class(pipeline_class: str) -> Any:
    from diffusers.pipelines.auto_pipeline import (
        AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    )

    for key, cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.items():
        if cls.__name__ == pipeline_class:
            return AUTO_IMAGE2IMAGE_PIPELINES_MAPPING.get(key)
    return None


def generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per output (seed, seed+1, ...): each image depends on its own seed
    only, so batching or splitting a request never changes a picture."""
    return [torch.Generator("cpu").manual_seed((seed + i) % 2**32) for i in range(count)]


def _accepted(fn: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(fn).parameters)


def generate_images(pipe: Any, request: JobRequest, on_step: StepCallback,
                    prompts: list[str] | None = None) -> list[Image.Image]:
    """Run ``pipe`` for a resolved image request; ``on_step(done, total)`` runs after each step
    and may raise to stop the job there.

    ``prompts`` runs several prompts in one call (one output each, seeds ``seed + i``) with the
    request's other parameters: output ``i`` equals a single request for ``prompts[i]`` at
    seed ``seed + i`` up to floating-point batching effects.
    """
    p = request.params
    assert p.seed is not None and p.steps is not None, "prepare_request resolves seed and steps"
    if p.init_image:
        cls = img2img_class(type(pipe).__name__)
        if cls is None:
            raise ValueError(f"{type(pipe).__name__} has no image-to-image variant")
        pipe = cls.from_pipe(pipe)
    accepted = _accepted(pipe.__call__)
    count = len(prompts) if prompts else p.num_outputs
    kwargs: dict[str, Any] = {
        "prompt": prompts or request.prompt, "num_inference_steps": p.steps, "guidance_scale": p.guidance_scale,
        "num_images_per_prompt": 1 if prompts else p.num_outputs, "generator": generators(p.seed, count),
        "output_type": "pil",
        "negative_prompt": [request.negative_prompt] * count if prompts and request.negative_prompt
        else request.negative_prompt,
    }
    if p.init_image:
        with Image.open(p.init_image) as img:
            kwargs["image"] = img.convert("RGB").resize((p.width or img.width, p.height or img.height))
        kwargs["strength"] = p.strength
    else:
        kwargs.update(height=p.height, width=p.width)
    kwargs.update({"use_resolution_binning": False, "clean_caption": False})

    def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = int(getattr(pipeline, "_num_timesteps", 0) or p.steps or 0)
        on_step(i + 1, total)
        return tensors

    def legacy_step(i: int, t: Any, latents: Any) -> None:  # pipelines with the old callback API
        on_step(i + 1, int(getattr(pipe, "_num_timesteps", 0) or p.steps or 0))

    if "callback_on_step_end" in accepted:
        kwargs["callback_on_step_end"] = step_end
    else:
        kwargs.update(callback=legacy_step, callback_steps=1)
    kwargs = {k: v for k, v in kwargs.items() if k in accepted and v is not None}
    return list(pipe(**kwargs).images)
