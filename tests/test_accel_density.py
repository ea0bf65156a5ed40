"""density (FlexDiT's idea): pooled tokens in the noisy steps, all tokens in the detailed ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques
from genaccel.accel.density import FlexDensity, _pool, _pool_time
from genaccel.errors import InvalidRequest


def run(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipe("a cat", num_inference_steps=6, height=64, width=64, output_type="np", use_resolution_binning=False,
                generator=torch.Generator().manual_seed(3)).images


def test_pool_averages_row_major_patches() -> None:
    tokens = torch.randn(2, 8 * 8, 5)
    pooled = _pool(tokens, (8, 8), 2)
    assert pooled.shape == (2, 16, 5)
    assert torch.allclose(pooled[:, 0], tokens[:, [0, 1, 8, 9]].mean(1))  # row-major 2x2 patch


def test_density_three_runs(tiny_dit) -> None:  # type: ignore[no-untyped-def]
    base = run(tiny_dit)
    never = apply_techniques(tiny_dit, [FlexDensity(threshold=1001)])
    np.testing.assert_allclose(run(tiny_dit), base, atol=1e-6)  # no step pooled: unchanged
    never.remove()
    techniques = apply_techniques(tiny_dit, [FlexDensity(threshold=500)])
    on = run(tiny_dit)
    state = techniques.handles[0].state  # type: ignore[attr-defined]
    assert 0 < state.pooled_calls < 6  # the noisy half only
    assert not np.array_equal(on, base) and np.abs(on - base).mean() < 0.05  # every token keeps its query
    techniques.remove()
    blocks = tiny_dit.transformer.transformer_blocks
    assert not tiny_dit.transformer._forward_pre_hooks and not blocks[0].attn1._forward_pre_hooks
    np.testing.assert_allclose(run(tiny_dit), base, atol=1e-4)


def test_density_is_refused_where_it_does_not_fit(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match=r"density.*does not fit the transformer NoneType"):
        apply_techniques(tiny_sd, [FlexDensity()])
    with pytest.raises(ValueError, match="pool=3 must be 2 or 4"):
        FlexDensity(pool=3)


def run_clip(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipe("a red circle moving from left to right", num_inference_steps=6, height=64, width=64,
                video_length=pipe.transformer.config.video_length, output_type="np", clean_caption=False,
                generator=torch.Generator().manual_seed(3)).frames


def test_pool_time_averages_adjacent_frames() -> None:
    tokens = torch.randn(3, 8, 5)
    pooled = _pool_time(tokens, 2)
    assert pooled.shape == (3, 4, 5) and torch.allclose(pooled[:, 1], tokens[:, 2:4].mean(1))


@pytest.mark.parametrize(("space", "time"), [(False, True), (True, True)])
def test_density_along_time_three_runs_on_latte(space: bool, time: bool) -> None:
    from pipelines.tiny_video import build_tiny_latte

    pipe = build_tiny_latte()
    pipe.set_progress_bar_config(disable=True)
    base = run_clip(pipe)
    techniques = apply_techniques(pipe, [FlexDensity(threshold=500, space=space, time=time)])
    on = run_clip(pipe)
    state = techniques.handles[0].state  # type: ignore[attr-defined]
    assert 0 < state.pooled_calls < 6
    assert not np.array_equal(on, base) and np.abs(on - base).mean() < 0.05
    techniques.remove()
    blocks = pipe.transformer.temporal_transformer_blocks
    assert not pipe.transformer._forward_pre_hooks and not blocks[0].attn1._forward_pre_hooks
    np.testing.assert_allclose(run_clip(pipe), base, atol=1e-4)


def test_density_is_refused_before_queueing_on_video_dits_it_does_not_fit(settings) -> None:  # type: ignore[no-untyped-def]
    from genaccel.spec import JobRequest
    from pipelines.prepare import prepare_request
    from pipelines.registry import ModelRegistry

    request = JobRequest.from_flat({"modality": "video", "prompt": "a cat", "model": "tiny-wan",
                                    "techniques": [{"name": "density"}]})
    with pytest.raises(InvalidRequest, match=r"density.*does not fit the transformer of WanPipeline"):
        prepare_request(request, ModelRegistry(settings), settings)
    with pytest.raises(ValueError, match="pool nothing"):
        FlexDensity(space=False, time=False)
