"""Step previews: a small picture of the current latents a few times per job, for the SSE
``progress`` events and the web UI. The pipeline's own VAE decodes one sample at a time, only
for latents of at most 64x64 (512 px images in SD); larger ones would make previews cost more
than they show, and get none until a tiny VAE (TAESD) is served."""

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
    if vae is None or latents.ndim != 4 or max(latents.shape[-2:]) > MAX_LATENT_SIDE or row >= latents.shape[0]:
        return None
    scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    sample = latents[row:row + 1].to(dtype=vae.dtype) / scale
    image = vae.decode(sample).sample[0].float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    pil.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
