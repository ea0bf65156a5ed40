"""DiT caches and token density on audio transformers (Stable Audio, genaccel's mel DiT): the
three-run test for every cache at its default windows (PAB and FasterCache fire only because EDM
timesteps are mapped onto 0-1000) and for density along time, the block registration first-block
cache and MagCache need, and the timestep mapping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques
from genaccel.accel.base import call_wrappers
from genaccel.accel.density import FlexDensity, _pool_frames
from genaccel.accel.dit_cache import (
    FasterCache,
    FirstBlockCache,
    MagCache,
    PyramidAttentionBroadcast,
    TaylorSeer,
    timestep_scale,
)
from tests.conftest import hooked

CONFIGS = [FirstBlockCache(threshold=0.5), PyramidAttentionBroadcast(), TaylorSeer(interval=2, warmup=2),
           FasterCache(uncond_skip=3), MagCache(threshold=0.5, retention=0.2, ratios=(1.0, 0.9, 0.95, 1.0, 0.98))]


@pytest.fixture(scope="module")
def stable_audio():  # type: ignore[no-untyped-def]
    from pipelines.tiny_audio import build_tiny_stable_audio

    pipe = build_tiny_stable_audio()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def mel_dit():  # type: ignore[no-untyped-def]
    from genaccel.refdata.music import caption_words
    from pipelines.mel_codec import MelCodecConfig
    from pipelines.mel_dit import MelDiTConfig, build_mel_dit

    return build_mel_dit(MelDiTConfig(layers=3, heads=2, kv_heads=1, head_dim=16, text_dim=32, text_layers=1),
                         caption_words(), codec=MelCodecConfig(griffin_lim_iters=1))


def sound(pipe: Any, call: Any = None) -> np.ndarray:
    kwargs: dict[str, Any] = {"prompt": "a slow flute melody", "num_inference_steps": 6, "guidance_scale": 3.0,
                              "generator": torch.Generator().manual_seed(0)}
    if type(pipe).__name__ == "StableAudioPipeline":
        out = (call or pipe)(audio_end_in_s=1.0, output_type="np", **kwargs).audios
        return np.asarray(out)
    return (call or pipe)(audio_length_in_s=1.0, output_type="latent", **kwargs).mels.numpy()


CASES = [("stable_audio", c) for c in CONFIGS] + [("mel_dit", c) for c in CONFIGS[:2]] + [("mel_dit", CONFIGS[3])] \
    + [("stable_audio", FlexDensity()), ("mel_dit", FlexDensity())] \
    + [(m, TaylorSeer(interval=2, warmup=2, scope="model")) for m in ("stable_audio", "mel_dit")]


@pytest.mark.parametrize(("model", "config"), CASES,
                         ids=lambda c: f"{c.name}-{getattr(c, 'scope', '')}".rstrip("-") if hasattr(c, "name") else c)
def test_three_runs(model: str, config: Any, request: pytest.FixtureRequest) -> None:
    pipe = request.getfixturevalue(model)
    base = sound(pipe)
    techniques = apply_techniques(pipe, [config])
    try:
        call = pipe.__call__
        for wrap in call_wrappers(pipe):
            call = wrap(call)
        techniques.reset()
        fast = sound(pipe, call)
        techniques.reset()
        again = sound(pipe, call)
    finally:
        techniques.remove()
    after = sound(pipe)
    scale = np.abs(base).mean()
    assert np.abs(fast - base).max() > 1e-6 * scale, "the cache never skipped anything"
    assert np.abs(fast - base).mean() < 0.5 * scale  # close to the baseline (tiny random model)
    np.testing.assert_array_equal(fast, again)  # reset: no state leaks from one job to the next
    np.testing.assert_allclose(after, base, atol=1e-6 * max(1.0, float(np.abs(base).max())))
    assert hooked(pipe.transformer) == []


def test_edm_timesteps_map_onto_the_windows_scale(stable_audio: Any) -> None:
    stable_audio.scheduler.set_timesteps(8)
    timesteps = stable_audio.scheduler.timesteps
    assert float(timesteps[0]) == pytest.approx(1.0955, abs=1e-3) and float(timesteps[-1]) < -1.5
    scale = timestep_scale(stable_audio)
    mapped = [scale(float(t)) for t in timesteps]
    assert mapped[0] == pytest.approx(1000, abs=1e-3) and mapped[-1] == pytest.approx(0, abs=1e-3)
    assert any(100 < m < 800 for m in mapped)  # PAB's default window holds some steps

    class Plain:
        scheduler = None

    assert timestep_scale(Plain())(500.0) == 500.0  # DDPM-style timesteps are left alone


def test_stable_audio_block_is_registered() -> None:
    from diffusers.hooks._helpers import TransformerBlockRegistry
    from diffusers.models.transformers.stable_audio_transformer import StableAudioDiTBlock

    meta = TransformerBlockRegistry.get(StableAudioDiTBlock)
    assert meta.return_hidden_states_index == 0 and meta.return_encoder_hidden_states_index is None


def test_density_pools_frames_after_the_global_token_and_restores_the_processor(mel_dit: Any) -> None:
    x = torch.arange(1 + 5, dtype=torch.float32).reshape(1, 1, 6, 1)  # global token 0, frames 1..5
    assert _pool_frames(x, 2).flatten().tolist() == [0.0, 1.5, 3.5, 5.0]
    processors = [block.attn1.processor for block in mel_dit.transformer.transformer_blocks]
    techniques = apply_techniques(mel_dit, [FlexDensity(threshold=500)])
    try:
        techniques.reset()
        sound(mel_dit)
        (handle,) = techniques.handles
        assert 0 < handle.state.pooled_calls < 12  # some of the 6 steps (two calls each, CFG) ran pooled
    finally:
        techniques.remove()
    assert [block.attn1.processor for block in mel_dit.transformer.transformer_blocks] == processors


def test_density_without_time_is_refused_on_audio_dits(settings: Any) -> None:
    from genaccel.errors import InvalidRequest
    from genaccel.spec import JobRequest
    from pipelines.prepare import prepare_request
    from pipelines.registry import ModelRegistry

    request = JobRequest.from_flat({"modality": "music", "prompt": "a flute melody", "model": "tiny-stable-audio",
                                    "techniques": [{"name": "density", "options": {"time": False}}]})
    with pytest.raises(InvalidRequest, match="time=False pools nothing on an audio DiT, whose tokens are time frames"):
        prepare_request(request, ModelRegistry(settings), settings)
