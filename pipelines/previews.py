"""Step previews: a small picture of the current latents a few times per job, for the SSE
``progress`` events and the web UI.

A model with a tiny VAE (a diffusers ``AutoencoderTiny``, the TAESD architecture) decodes every
preview with it, at any latent size: it is what TAESD is for, a few convolutions instead of the
full decoder. It comes from a ``preview_vae/`` folder inside the model's folder
(``AutoencoderTiny.save_pretrained``, safetensors only) or from ``Settings.preview_vaes`` by
model name, and is kept on the loaded pipeline as ``_genaccel_preview_vae`` (not a pipeline
component: techniques, offloading and ``save_pretrained`` never see it).

Without one, the pipeline's own VAE decodes one sample at a time for latents of at most 64x64
(512 px images in SD). Larger ones would make previews cost more than they show; they get a
latent-to-RGB linear map instead (what ComfyUI's "latent2rgb" previews do with fixed per-family
factors): fitted once per VAE by least squares on a few decoded random latents, then one matrix
product per preview. Blurry colours, no detail, no cost; a warning, once per VAE, says how to add
a tiny VAE. No TAESD weights are fetched or trained here: a tiny decoder belongs to one VAE's
latent space, so it is the model's to ship."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from genaccel.settings import Settings
from pipelines.registry import ModelInfo

log = logging.getLogger(__name__)
MAX_LATENT_SIDE = 64
PREVIEW_PX = 96
PREVIEW_VAE_DIR = "preview_vae"
PREVIEW_VAE_ATTR = "_genaccel_preview_vae"


@torch.no_grad()
def preview_data_url(pipe: Any, latents: torch.Tensor, row: int) -> str | None:
    """A PNG data URL of ``latents[row]`` decoded by the pipeline's tiny VAE, else by ``pipe.vae``;
    ``None`` where not possible."""
    vae = getattr(pipe, "vae", None)
    if vae is None or latents.ndim != 4 or row >= latents.shape[0]:
        return None
    tiny = getattr(pipe, PREVIEW_VAE_ATTR, None)
    if tiny is not None:
        image = tiny_decode(tiny, latents[row:row + 1])[0].float()
    else:
        scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        sample = latents[row:row + 1].to(dtype=vae.dtype) / scale
        if max(latents.shape[-2:]) > MAX_LATENT_SIDE:
            _warn_no_tiny_vae(vae)
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


def tiny_decode(tiny: Any, latents: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H*8, W*8)`` in [-1, 1] from the pipeline's latents, scaled as a diffusers pipeline
    scales them for ``tiny`` as its ``vae``: TAESD for SD / SDXL has ``scaling_factor`` 1.0 and
    decodes the latents exactly as the denoiser sees them; TAESD3 / TAEF1 carry their VAE's
    ``scaling_factor`` and ``shift_factor`` and decode unscaled latents."""
    config = tiny.config
    shift = float(config.get("shift_factor") or 0.0)
    param = next(tiny.parameters())
    z = latents.to(device=param.device, dtype=param.dtype) / float(config.get("scaling_factor") or 1.0) + shift
    return tiny.decode(z).sample  # type: ignore[no-any-return]


def _warn_no_tiny_vae(vae: Any) -> None:
    """Say once per VAE that large previews are coarse, and how to get better ones (style: a missing
    capability logs one warning and falls back)."""
    if getattr(vae, "_genaccel_preview_warned", False):
        return
    vae._genaccel_preview_warned = True
    log.warning("step previews of latents larger than %dx%d use a coarse latent-to-RGB map: this model has no "
                "tiny VAE; for sharp, cheap previews save a diffusers AutoencoderTiny (TAESD) made for its VAE "
                "with save_pretrained (safetensors) as a %s/ folder inside the model's folder, or name that "
                "folder in GENACCEL_PREVIEW_VAES", MAX_LATENT_SIDE, MAX_LATENT_SIDE, PREVIEW_VAE_DIR)


def preview_vae_folder(info: ModelInfo, settings: Settings) -> Path | None:
    """Where ``info``'s tiny VAE is: ``Settings.preview_vaes[name]``, else the model folder's
    ``preview_vae/``; ``None`` when it has none."""
    named = settings.preview_vaes.get(info.name)
    if named is not None:
        return Path(named)
    if info.builder is None:
        folder = Path(info.location) / PREVIEW_VAE_DIR
        if folder.is_dir():
            return folder
    return None


def attach_preview_vae(pipe: Any, folder: Path, device: torch.device, dtype: torch.dtype) -> Any | None:
    """Load the ``AutoencoderTiny`` in ``folder`` (safetensors only, local files only) onto
    ``device`` and keep it on ``pipe`` for previews. One that cannot be loaded or does not fit the
    pipeline's latents is left out with a warning: previews fall back, the model still runs."""
    from diffusers import AutoencoderTiny

    if not folder.is_dir():
        log.warning("tiny VAE for previews: no folder %s; fix: correct GENACCEL_PREVIEW_VAES", folder)
        return None
    try:
        tiny = AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True,
                                               local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("tiny VAE for previews in %s not loaded (%s); fix: save a diffusers AutoencoderTiny there "
                    "with save_pretrained (safetensors weights)", folder, str(exc).splitlines()[0])
        return None
    vae = getattr(pipe, "vae", None)
    expected = getattr(getattr(vae, "config", None), "latent_channels", None)
    if expected is not None and tiny.config.latent_channels != expected:
        log.warning("tiny VAE for previews in %s not used: it decodes %d latent channels, the model's VAE has %d; "
                    "fix: use the TAESD made for this model's VAE", folder, tiny.config.latent_channels, expected)
        return None
    tiny = tiny.to(device).eval().requires_grad_(False)
    setattr(pipe, PREVIEW_VAE_ATTR, tiny)
    return tiny


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
