"""Image adapter: runs any diffusers text-to-image pipeline, and its img2img variant when the
request carries an init image (built with ``from_pipe``, sharing the loaded components)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from PIL import Image

from genaccel.accel.base import call_wrappers
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.modality import (
    ImageOutput,
    LatentsCallback,
    Output,
    RunHooks,
    StepCallback,
    check_format,
    register_adapter,
)

if TYPE_CHECKING:
    from pipelines.registry import ModelInfo


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


def batch_key(request: JobRequest) -> tuple[Any, ...] | None:
    """Requests with equal keys can share one pipeline call (``generate_batch``); ``None``: never
    batched (img2img runs alone)."""
    p = request.params
    if request.modality != "image" or p.init_image:
        return None
    techniques = tuple((t.name, tuple(sorted(t.options.items()))) for t in request.techniques)
    return (request.model, request.profile, techniques, p.steps, p.guidance_scale, p.width, p.height)


def generate_images(pipe: Any, request: JobRequest, on_step: StepCallback,
                    prompts: list[str] | None = None, on_latents: LatentsCallback | None = None) -> list[Image.Image]:
    """Run ``pipe`` for a resolved image request; ``on_step(done, total)`` runs after each step
    and may raise to stop the job there.

    ``prompts`` runs several prompts in one call (one output each, seeds ``seed + i``) with the
    request's other parameters: output ``i`` equals a single request for ``prompts[i]`` at
    seed ``seed + i`` up to floating-point batching effects.
    """
    p = request.params
    assert p.seed is not None and p.steps is not None, "prepare_request resolves seed and steps"
    if prompts:
        count = len(prompts)
        return _call(pipe, request, on_step, prompts, [request.negative_prompt or ""] * count,
                     generators(p.seed, count), on_latents)
    return _call(pipe, request, on_step, [request.prompt] * p.num_outputs,
                 [request.negative_prompt or ""] * p.num_outputs, generators(p.seed, p.num_outputs), on_latents)


def generate_batch(pipe: Any, requests: list[JobRequest], on_step: StepCallback,
                   on_latents: LatentsCallback | None = None) -> list[list[Image.Image]]:
    """Several compatible requests (equal ``batch_key``) in one pipeline call. Every output keeps
    its own request's prompt, negative prompt and seed, so it matches the unbatched run up to
    floating-point batching effects. Returns the images of each request, in order."""
    keys = {batch_key(r) for r in requests}
    if len(keys) != 1 or None in keys:
        raise ValueError("generate_batch needs requests with one and the same batch_key")
    prompts: list[str] = []
    negatives: list[str] = []
    gens: list[torch.Generator] = []
    for r in requests:
        assert r.params.seed is not None
        prompts += [r.prompt] * r.params.num_outputs
        negatives += [r.negative_prompt or ""] * r.params.num_outputs
        gens += generators(r.params.seed, r.params.num_outputs)
    images = _call(pipe, requests[0], on_step, prompts, negatives, gens, on_latents)
    out, i = [], 0
    for r in requests:
        out.append(images[i:i + r.params.num_outputs])
        i += r.params.num_outputs
    return out


def _call(pipe: Any, request: JobRequest, on_step: StepCallback, prompts: list[str], negatives: list[str],
          gens: list[torch.Generator], on_latents: LatentsCallback | None = None) -> list[Image.Image]:
    """One pipeline call with one prompt, negative prompt and generator per output image."""
    p = request.params
    if p.init_image:
        cls = img2img_class(type(pipe).__name__)
        if cls is None:
            raise ValueError(f"{type(pipe).__name__} has no image-to-image variant")
        pipe = cls.from_pipe(pipe)
    accepted = _accepted(pipe.__call__)
    kwargs: dict[str, Any] = {
        "prompt": prompts, "num_inference_steps": p.steps, "guidance_scale": p.guidance_scale,
        "num_images_per_prompt": 1, "generator": gens, "output_type": "pil",
        "negative_prompt": negatives if any(negatives) else None,
    }
    if p.init_image:
        with Image.open(p.init_image) as img:
            kwargs["image"] = img.convert("RGB").resize((p.width or img.width, p.height or img.height))
        kwargs["strength"] = p.strength
    else:
        kwargs.update(height=p.height, width=p.width)
    kwargs.update({"use_resolution_binning": False, "clean_caption": False})

    def total_steps() -> int:  # the schedule really run (shallow_start shortens it)
        timesteps = getattr(pipe.scheduler, "timesteps", None)
        return int(getattr(pipe, "_num_timesteps", 0) or (len(timesteps) if timesteps is not None else 0)
                   or p.steps or 0)

    def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = total_steps()
        on_step(i + 1, total)
        if on_latents is not None and "latents" in tensors:
            on_latents(i + 1, total, tensors["latents"])
        return tensors

    def legacy_step(i: int, t: Any, latents: Any) -> None:  # pipelines with the old callback API
        on_step(i + 1, total_steps())

    if "callback_on_step_end" in accepted:
        kwargs["callback_on_step_end"] = step_end
        if "callback_on_step_end_tensor_inputs" in accepted:
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    else:
        kwargs.update(callback=legacy_step, callback_steps=1)
    kwargs = {k: v for k, v in kwargs.items() if k in accepted and v is not None}
    call = pipe.__call__
    for wrap in call_wrappers(pipe):  # techniques that change the call itself (shallow_start)
        call = wrap(call)
    return list(call(**kwargs).images)


class ImageAdapter:
    """Text-to-image and image-to-image on any diffusers image pipeline."""

    name: ClassVar[str] = "image"
    modality: ClassVar[str] = "image"
    formats: ClassVar[tuple[str, ...]] = ("png",)
    fields: ClassVar[tuple[str, ...]] = ("negative_prompt", "width", "height", "init_image", "strength")

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        p, d, limits = request.params, info.defaults, settings.limits
        if p.init_image is not None and not supports_img2img(info.pipeline_class):
            raise InvalidRequest("init_image", p.init_image, f"model {info.name} ({info.pipeline_class}) has no "
                                 "image-to-image variant",
                                 "drop --init, or use a Stable Diffusion, SDXL, SD3 or Flux model")
        width, height = p.width or d.width, p.height or d.height
        megapixels = width * height / 1e6
        if megapixels > limits.max_megapixels:
            raise InvalidRequest("width*height", f"{width}x{height}", f"must be at most {limits.max_megapixels} "
                                 "megapixels", "lower --width or --height")
        return {
            "width": width, "height": height,
            "init_image": str(Path(p.init_image).expanduser().resolve()) if p.init_image else None,
            "strength": p.strength if p.strength is not None or p.init_image is None else 0.6,
            "output_format": check_format(request, self, d.output_format),
        }

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return batch_key(request)

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        if len(requests) == 1:
            images = [generate_images(pipe, requests[0], hooks.on_step, on_latents=hooks.on_latents)]
        else:
            images = generate_batch(pipe, requests, hooks.on_step, on_latents=hooks.on_latents)
        return [[ImageOutput(image) for image in group] for group in images]

    def serves(self, pipeline_class: str) -> bool:
        from pipelines.registry import text_to_image_classes

        return pipeline_class in text_to_image_classes()

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        from pipelines.previews import preview_data_url

        return preview_data_url(pipe, latents, row)


register_adapter(ImageAdapter())
