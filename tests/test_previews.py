"""Step previews: the VAE for small latents, a fitted latent-to-RGB map for large ones."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from pipelines.previews import latent_rgb, preview_data_url


def _image(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_small_latents_decode_with_the_vae(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    url = preview_data_url(tiny_sd, torch.randn(2, 4, 16, 16), row=1)
    assert url is not None and max(_image(url).size) <= 96
    assert preview_data_url(tiny_sd, torch.randn(2, 4, 16, 16), row=2) is None


def test_large_latents_use_a_fitted_linear_map(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    vae = tiny_sd.vae
    vae.__dict__.pop("_genaccel_latent_rgb", None)
    calls: list[int] = []
    handle = vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        first = preview_data_url(tiny_sd, torch.randn(1, 4, 96, 128), row=0)
        second = preview_data_url(tiny_sd, torch.randn(1, 4, 96, 128), row=0)
    finally:
        handle.remove()
    assert first is not None and second is not None
    assert _image(first).size == (96, 72)  # aspect kept, thumbnail size
    assert len(calls) == 1  # fitted once per VAE, then no decoder call at all
    weight, bias = latent_rgb(vae)
    assert weight.shape == (4, 3) and bias.shape == (3,)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decoded = torch.nn.functional.adaptive_avg_pool2d(vae.decode(z).sample, (16, 16))[0]
    linear = torch.einsum("chw,cr->rhw", z[0], weight) + bias[:, None, None]
    residual = (decoded - linear).square().mean() / (decoded - decoded.mean()).square().mean()
    assert residual < 1.0  # explains part of the decoder's colour
