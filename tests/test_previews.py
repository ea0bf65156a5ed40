"""Step previews: a tiny VAE where the model has one; else the VAE for small latents and a fitted
latent-to-RGB map (with one warning) for large ones."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines import previews
from pipelines.previews import (
    PREVIEW_VAE_ATTR,
    attach_preview_vae,
    latent_rgb,
    preview_data_url,
    preview_vae_folder,
)
from pipelines.registry import ModelRegistry

CPU, F32 = torch.device("cpu"), torch.float32


def _image(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_small_latents_decode_with_the_vae(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    url = preview_data_url(tiny_sd, torch.randn(2, 4, 16, 16), row=1)
    assert url is not None and max(_image(url).size) <= 96
    assert preview_data_url(tiny_sd, torch.randn(2, 4, 16, 16), row=2) is None


def test_large_latents_use_a_fitted_linear_map(tiny_sd, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    vae = tiny_sd.vae
    vae.__dict__.pop("_genaccel_latent_rgb", None)
    vae.__dict__.pop("_genaccel_preview_warned", None)
    calls: list[int] = []
    handle = vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with caplog.at_level(logging.WARNING, logger="pipelines.previews"):
            first = preview_data_url(tiny_sd, torch.randn(1, 4, 96, 128), row=0)
            second = preview_data_url(tiny_sd, torch.randn(1, 4, 96, 128), row=0)
    finally:
        handle.remove()
    assert first is not None and second is not None
    assert _image(first).size == (96, 72)  # aspect kept, thumbnail size
    assert len(calls) == 1  # fitted once per VAE, then no decoder call at all
    warned = [r.getMessage() for r in caplog.records if "no tiny VAE" in r.getMessage()]
    assert len(warned) == 1 and "preview_vae/ folder inside the model's folder" in warned[0]  # once per VAE
    weight, bias = latent_rgb(vae)
    assert weight.shape == (4, 3) and bias.shape == (3,)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decoded = torch.nn.functional.adaptive_avg_pool2d(vae.decode(z).sample, (16, 16))[0]
    linear = torch.einsum("chw,cr->rhw", z[0], weight) + bias[:, None, None]
    residual = (decoded - linear).square().mean() / (decoded - decoded.mean()).square().mean()
    assert residual < 1.0  # explains part of the decoder's colour


def _tiny_vae(latent_channels: int = 4, **config: float):  # type: ignore[no-untyped-def]
    """A random-weight TAESD-architecture VAE at toy width (decodes 2x, like tiny-sd's VAE)."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                               num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=latent_channels)
    if config:
        tiny.register_to_config(**config)
    return tiny


@pytest.fixture(scope="module")
def sd_with_tiny_vae(tmp_path_factory: pytest.TempPathFactory, tiny_sd) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("models") / "sd-taesd"
    tiny_sd.save_pretrained(path)
    _tiny_vae().save_pretrained(path / "preview_vae")
    return path


def test_tiny_vae_from_the_model_folder_decodes_every_preview(settings: Settings, sd_with_tiny_vae: Path,
                                                              tiny_sd) -> None:  # type: ignore[no-untyped-def]
    info = ModelRegistry(settings).resolve(str(sd_with_tiny_vae))
    folder = preview_vae_folder(info, settings)
    assert folder == sd_with_tiny_vae / "preview_vae"
    pipe = SimpleNamespace(vae=tiny_sd.vae)
    tiny = attach_preview_vae(pipe, folder, CPU, F32)
    assert tiny is not None and getattr(pipe, PREVIEW_VAE_ATTR) is tiny
    seen: list[torch.Tensor] = []
    hooks = [tiny.decoder.register_forward_pre_hook(lambda m, a: seen.append(a[0])),
             tiny_sd.vae.decoder.register_forward_pre_hook(lambda m, a: pytest.fail("full VAE decoder ran"))]
    try:
        for shape in [(2, 4, 16, 16), (1, 4, 96, 128)]:  # below and above the full-decode limit
            latents = torch.randn(*shape)
            url = preview_data_url(pipe, latents, row=shape[0] - 1)
            assert url is not None and max(_image(url).size) <= 96
            assert torch.equal(seen[-1], latents[-1:])  # TAESD for SD: scaling_factor 1.0, latents as they are
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 2


def test_tiny_vae_scaling_follows_its_own_config() -> None:
    tiny = _tiny_vae(scaling_factor=1.5, shift_factor=0.1)  # as TAESD3 / TAEF1 configs carry their VAE's
    seen: list[torch.Tensor] = []
    hook = tiny.decoder.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        image = previews.tiny_decode(tiny, latents)
    hook.remove()
    assert torch.allclose(seen[0], latents / 1.5 + 0.1)
    assert image.shape == (1, 3, 16, 16)  # RGB at the VAE's scale (previews clamp to [-1, 1])


def test_runner_attaches_the_tiny_vae_and_previews_use_it(settings: Settings, sd_with_tiny_vae: Path,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.engine import LocalEngine

    calls: list[int] = []
    real = previews.tiny_decode
    monkeypatch.setattr(previews, "tiny_decode", lambda t, z: calls.append(1) or real(t, z))
    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": "x", "steps": 4, "model": str(sd_with_tiny_vae)}),
                            output_dir=tmp_path)
        (done,) = engine.wait([job.id])
        (pipe, _lock), = engine.runner.cache._entries.values()
    assert done.state == "succeeded", done.error
    assert done.metadata["preview"].startswith("data:image/png;base64,") and calls
    assert getattr(pipe, PREVIEW_VAE_ATTR) is not None
    assert PREVIEW_VAE_ATTR not in pipe.components  # not a component: techniques and save_pretrained skip it


def test_setting_names_a_tiny_vae_per_model(settings: Settings, sd_with_tiny_vae: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = sd_with_tiny_vae / "preview_vae"
    monkeypatch.setenv("GENACCEL_PREVIEW_VAES", json.dumps({"tiny-sd": str(folder)}))
    from_env = Settings()
    info = ModelRegistry(settings).resolve("tiny-sd")
    assert preview_vae_folder(info, settings) is None  # built-in, nothing named
    assert preview_vae_folder(info, from_env) == folder


def test_unusable_tiny_vaes_are_not_loaded(tiny_sd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    _tiny_vae().save_pretrained(tmp_path / "pickled", safe_serialization=False)
    _tiny_vae(latent_channels=16).save_pretrained(tmp_path / "other")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was unpickled"))
    pipe = SimpleNamespace(vae=tiny_sd.vae)
    with caplog.at_level(logging.WARNING, logger="pipelines.previews"):
        assert attach_preview_vae(pipe, tmp_path / "pickled", CPU, F32) is None
        assert attach_preview_vae(pipe, tmp_path / "other", CPU, F32) is None
        assert attach_preview_vae(pipe, tmp_path / "missing", CPU, F32) is None
    assert not hasattr(pipe, PREVIEW_VAE_ATTR)
    text = caplog.text
    assert "diffusion_pytorch_model.safetensors" in text and "16 latent channels" in text and "no folder" in text
