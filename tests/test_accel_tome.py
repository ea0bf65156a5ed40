"""ToMe and ToDo: the three-run test, `tomesd` as ToMe's oracle, own randomness, batching, refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from genaccel.accel import apply_techniques, parse_technique
from genaccel.accel.todo import ToDoConfig, downsample_tokens
from genaccel.accel.tome import ToMeConfig
from genaccel.errors import InvalidRequest, TechniqueAlreadyApplied
from genaccel.settings import Settings
from genaccel.spec import JobRequest, TechniqueSpec
from pipelines.prepare import prepare_request
from pipelines.registry import ModelRegistry
from tests.conftest import hooked

# Stated tolerance on [0, 1] images for ratio 0.5 / factor 2 at the first UNet level, 6 DDIM steps
MEAN_TOL, MAX_TOL = 0.02, 0.1


def run(pipe: Any, prompts: str | list[str] = "a red circle", seeds: tuple[int, ...] = (3,), size: int = 64,
        steps: int = 6) -> np.ndarray:
    return pipe(prompts, num_inference_steps=steps, height=size, width=size, output_type="np",
                generator=[torch.Generator().manual_seed(s) for s in seeds]).images





@pytest.mark.parametrize("config", [ToMeConfig(), ToDoConfig()], ids=["tome", "todo"])
def test_three_runs(sd4, config: Any) -> None:  # type: ignore[no-untyped-def]
    baseline = run(sd4)
    handle = apply_techniques(sd4, [config])
    to_k = sd4.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_k
    tokens: list[int] = []
    probe = to_k.register_forward_pre_hook(lambda m, a: tokens.append(a[0].shape[1]))
    handle.reset()
    enabled = run(sd4)
    probe.remove()
    handle.remove()
    removed = run(sd4)
    # 64 px -> 32x32 latent -> 1024 tokens at the first level: ToMe merges half, ToDo keeps 1 key in 4
    assert set(tokens) == {512 if config.name == "tome" else 256}
    diff = np.abs(enabled - baseline)
    assert 0 < diff.mean() < MEAN_TOL and diff.max() < MAX_TOL
    assert np.abs(removed - baseline).max() <= 1e-4
    assert hooked(sd4.unet) == []


@pytest.mark.parametrize(("options", "size"), [
    ({"use_rand": False}, 64),
    ({"use_rand": True}, 64),
    ({"ratio": 0.6, "max_downsample": 8, "merge_crossattn": True, "merge_mlp": True}, 72),  # 9x9 and 5x5 grids
])
def test_matches_tomesd(sd4, options: dict[str, Any], size: int) -> None:  # type: ignore[no-untyped-def]
    tomesd = pytest.importorskip("tomesd")
    args = {"ratio": 0.5, **options}
    tomesd.apply_patch(sd4, **args)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # tomesd forks the global RNG at its first draw: make it our seed's stream
            oracle = run(sd4, size=size)
    finally:
        tomesd.remove_patch(sd4)
        for module in sd4.unet.modules():  # remove_patch leaves its info behind
            module.__dict__.pop("_tome_info", None)
    handle = apply_techniques(sd4, [ToMeConfig(**args, seed=0)])
    ours = run(sd4, size=size)
    handle.remove()
    assert np.abs(ours - oracle).max() <= 1e-3
    assert np.abs(ours - run(sd4, size=size)).mean() > 0  # the comparison is not vacuous
    assert hooked(sd4.unet) == []


def test_own_seeded_generator_leaves_global_rng_alone(sd4) -> None:  # type: ignore[no-untyped-def]
    handle = apply_techniques(sd4, [ToMeConfig(use_rand=True, seed=5)])
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = run(sd4)
    assert torch.equal(torch.get_rng_state(), state)  # the technique drew nothing from the global RNG
    torch.manual_seed(2)  # another global state: no effect on the result
    handle.reset()  # per job: the generator starts again from the seed
    assert np.array_equal(run(sd4), first)
    assert not np.array_equal(run(sd4), first)  # without reset the stream goes on (next job of a worker)
    handle.remove()
    handle = apply_techniques(sd4, [ToMeConfig(use_rand=True, seed=6)])
    assert not np.array_equal(run(sd4), first)  # the seed picks the sub-grids
    handle.remove()


@pytest.mark.parametrize("config", [ToMeConfig(), ToDoConfig()], ids=["tome", "todo"])
def test_merging_is_per_sample(sd4, config: Any) -> None:  # type: ignore[no-untyped-def]
    handle = apply_techniques(sd4, [config])
    handle.reset()
    alone = run(sd4, ["a red circle"], (3,))
    handle.reset()
    batched = run(sd4, ["a red circle", "a blue square"], (3, 4))  # CFG: a UNet batch of 4
    handle.remove()
    assert np.abs(batched[0] - alone[0]).max() <= 1e-4
    assert np.abs(batched[1] - alone[0]).mean() > 0.01


def test_first_level_without_attention_is_untouched(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    """SDXL-like layout (no attention at the first level): max_downsample=1 merges nothing, 2 does."""
    baseline = run(tiny_sd, steps=3)
    handle = apply_techniques(tiny_sd, [ToMeConfig()])
    assert np.abs(run(tiny_sd, steps=3) - baseline).max() <= 1e-6
    handle.remove()
    handle = apply_techniques(tiny_sd, [ToMeConfig(max_downsample=2), ToDoConfig(max_downsample=2)])
    assert np.abs(run(tiny_sd, steps=3) - baseline).mean() > 0
    handle.remove()
    assert hooked(tiny_sd.unet) == []


def test_downsampling_is_a_nearest_neighbour_grid_pick() -> None:
    x = torch.arange(2 * 6 * 4 * 3, dtype=torch.float32).view(2, 6 * 4, 3)  # (B, h*w, C), h=6, w=4
    expected = x.view(2, 6, 4, 3)[:, ::2, ::2].reshape(2, 6, 3)
    assert torch.equal(downsample_tokens(x, 6, 4, 2), expected)


@pytest.mark.parametrize("config", [ToMeConfig(), ToDoConfig()], ids=["tome", "todo"])
def test_apply_twice_is_refused(sd4, config: Any) -> None:  # type: ignore[no-untyped-def]
    handle = apply_techniques(sd4, [config])
    with pytest.raises(TechniqueAlreadyApplied, match=rf"technique {config.name} is already applied"):
        apply_techniques(sd4, [config])
    handle.remove()
    assert hooked(sd4.unet) == []


def test_bad_options_and_family(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match=r"ratio=1.5 must be between 0 and 0.75 \(1 - 1/\(sx\*sy\)"):
        parse_technique(TechniqueSpec(name="tome", options={"ratio": 1.5}))
    with pytest.raises(InvalidRequest, match=r"max_downsample=3 must be one of 1, 2, 4, 8"):
        parse_technique(TechniqueSpec(name="tome", options={"max_downsample": 3}))
    with pytest.raises(InvalidRequest, match=r"nothing would be merged"):
        parse_technique(TechniqueSpec(name="tome", options={"merge_attn": False}))
    with pytest.raises(InvalidRequest, match=r"factor=1 must be between 2 and 8"):
        parse_technique(TechniqueSpec(name="todo", options={"factor": 1}))
    with pytest.raises(InvalidRequest, match=r"techniques.todo='ratio' is invalid: unknown option"):
        parse_technique(TechniqueSpec(name="todo", options={"ratio": 0.5}))
    registry = ModelRegistry(settings)
    for name in ("tome", "todo"):
        request = JobRequest.from_flat({"prompt": "x", "model": "tiny-dit", "techniques": [{"name": name}]})
        with pytest.raises(InvalidRequest, match=rf"techniques='{name}' is invalid: does not fit the image-dit "
                                                 r"denoiser family .*fix: .*token-density control \(density\)"):
            prepare_request(request, registry, settings)


def test_job_records_techniques_and_leaves_pipeline_clean(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipelines.engine import LocalEngine

    with LocalEngine(settings) as engine:
        job = engine.submit(JobRequest.from_flat({"prompt": "x", "steps": 3, "techniques": [
            {"name": "tome", "options": {"max_downsample": 2}}, {"name": "todo", "options": {"max_downsample": 2}}]}),
            output_dir=tmp_path)
        (done,) = engine.wait([job.id])
        pipe_entries = list(engine.runner.cache._entries.values())
    assert done.state == "succeeded", done.error
    assert [t["name"] for t in done.metadata["techniques"]] == ["tome", "todo"]
    assert done.metadata["techniques"][0]["ratio"] == 0.5
    assert hooked(pipe_entries[0][0].unet) == []
