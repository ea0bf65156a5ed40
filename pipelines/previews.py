"""Step previews: a small picture of the current latents a few times per job, for the SSE
``progress`` events and the web UI. The pipeline's own VAE decodes one sample at a time for
latents of at most 64x64 (512 px images in SD). Larger ones would make previews cost more than
they show; they get a latent-to-RGB linear map instead (what ComfyUI's "latent2rgb" previews
do with fixed per-family factors): fitted once per VAE by least squares on a few decoded random
latents, then one matrix product per preview. Blurry colours, no detail, no cost. Not TAESD:
its weights cannot be fetched here and no tiny decoder is trained for every VAE."""

from __future__ import annotations

import base64
import io
from typing import Any

import torch
from PIL import Image

MAX_LATENT_SIDE = 64
PREVIEW_PX = 96


@torch.no_grad()
def preview_data_url(pipe: Any, latents: torch.Tensor, row: int) -> str | None:
    """A PNG data URL of ``latents[row]`` decoded by ``pipe.vae``; ``None`` where not possible."""
    vae = getattr(pipe, "vae", None)
    if vae is None or latents.ndim != 4 or row >= latents.shape[0]:
        return None
    scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    sample = latents[row:row + 1].to(dtype=vae.dtype) / scale
    if max(latents.shape[-2:]) > MAX_LATENT_SIDE:
        weight, bias = latent_rgb(vae)
        image = torch.einsum("chw,cr->rhw", sample[0].float().cpu(), weight) + bias[:, None, None]
    else:
        image = vae.decode(sample).sample[0].float()
    image = image.clamp(-1, 1).add(1).mul(127.5).round().byte()
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    pil.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@torch.no_grad()
def latent_rgb(vae: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight (C, 3), bias (3,))`` mapping one unscaled latent pixel to RGB in [-1, 1], fitted
    once per VAE instance (cached on it)."""
    cached = getattr(vae, "_genaccel_latent_rgb", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    channels = int(vae.config.latent_channels)
    z = torch.randn(4, channels, 16, 16, generator=torch.Generator().manual_seed(0))
    param = next(vae.parameters())
    decoded = vae.decode(z.to(device=param.device, dtype=param.dtype)).sample.float().cpu()
    target = torch.nn.functional.adaptive_avg_pool2d(decoded, (16, 16))
    x = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, channels), torch.ones(4 * 256, 1)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x, y).solution
    fitted = (solution[:channels], solution[channels])
    vae._genaccel_latent_rgb = fitted
    return fitted
