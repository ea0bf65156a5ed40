"""DiT caches on the speech decoders (speech-ref's Stable Audio DiT, LongCat's AudioDiT): the
three-run test (baseline, enabled ~ baseline and deterministic, removed == baseline, no hooks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques
from genaccel.accel.dit_cache import FirstBlockCache, MagCache, PyramidAttentionBroadcast, TaylorSeer
from genaccel.refdata.speech import available
from tests.conftest import hooked

pytestmark = pytest.mark.skipif(not available(), reason="libespeak-ng is not installed")
CONFIGS = [FirstBlockCache(threshold=0.5), PyramidAttentionBroadcast(skip=2, window_low=0, window_high=1000),
           TaylorSeer(interval=2, warmup=2),
           MagCache(threshold=0.5, retention=0.2, ratios=(1.0, 0.9, 0.95, 1.0, 0.98))]


@pytest.fixture(scope="module")
def decoders() -> dict[str, Any]:
    from pipelines.speech_models import build_tiny_longcat
    from pipelines.speech_ref import PhonemeEncoder, SpeechRefConfig, SpeechRefModel, build_decoder, corpus_phonemes

    cfg = SpeechRefConfig(phonemes=corpus_phonemes(), dim=32, encoder_layers=1, dit_layers=4, dit_heads=2,
                          dit_head_dim=16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = SpeechRefModel(cfg, PhonemeEncoder(cfg), build_decoder(cfg))
        for p in ref.transformer.parameters():  # non-trivial block outputs, so skipping changes something
            p.data += 0.02 * torch.randn_like(p)
    ref.griffin_lim_iters = 2
    longcat = build_tiny_longcat()
    longcat.pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():  # its gates start at zero: every block would be the identity
        for p in longcat.transformer.parameters():
            p.data += 0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(1))
    return {"speech-ref": ref, "longcat": longcat}


def run(model: Any) -> np.ndarray:
    return model.synthesize("red cat", model.voices[0], 1.0, 6, torch.Generator().manual_seed(3),
                            lambda i, n: None)


@pytest.mark.parametrize("name", ["speech-ref", "longcat"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_three_runs_on_speech_decoders(decoders: dict[str, Any], name: str, config: Any) -> None:
    model = decoders[name]
    base = run(model)
    techniques = apply_techniques(model, [config])
    try:
        techniques.reset()
        fast = run(model)
        techniques.reset()
        again = run(model)
    finally:
        techniques.remove()
    after = run(model)
    assert not np.array_equal(fast, base), "the cache never skipped anything"
    np.testing.assert_array_equal(fast, again)
    np.testing.assert_allclose(after, base, atol=1e-5)
    assert hooked(model.transformer) == []
