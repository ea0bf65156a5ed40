"""Runner: compatible queued jobs share one pipeline call with per-job seeds; out-of-memory is
retried once with memory-saving options, then failed clearly while the worker keeps serving."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import pipelines.image as image_module
from genaccel.settings import Settings
from genaccel.spec import Job, JobRequest
from pipelines.engine import LocalEngine
from pipelines.image import batch_key
from pipelines.invariance import (
    ROWS_2D,
    ContiguousGroupNorm,
    OneDNNConv2d,
    PerSampleLinear,
    is_batch_invariant,
    make_batch_invariant,
    undo_batch_invariant,
)


def submit_all(settings: Settings, bodies: list[dict[str, Any]], out: Path,
               during: Any = None) -> list[Job]:
    engine = LocalEngine(settings, scoped=False)
    ids = [engine.submit(JobRequest.from_flat(b), output_dir=out).id for b in bodies]  # all queued first
    engine.dispatcher.start()
    if during:
        during(engine, ids)
    try:
        return engine.wait(ids)
    finally:
        engine.dispatcher.stop(timeout=30)


def pixels(job: Job) -> list[np.ndarray]:
    return [np.asarray(Image.open(a.path)).astype(int) for a in job.artifacts]


BODIES = [{"prompt": "a cat", "steps": 3, "seed": 1}, {"prompt": "a dog", "steps": 3, "seed": 9, "num_outputs": 2},
          {"prompt": "a cow", "steps": 3, "seed": 4, "negative": "blurry"}]


def test_compatible_jobs_share_a_call_and_match_unbatched(isolated_home: Path, tmp_path: Path) -> None:
    settings = Settings(home=isolated_home, default_model="tiny-sd", max_batch=4)
    batched = submit_all(settings, BODIES, tmp_path / "b")
    single = [submit_all(settings, [body], tmp_path / f"s{i}")[0] for i, body in enumerate(BODIES)]  # one at a time
    assert [j.state for j in batched] == ["succeeded"] * 3
    assert [j.metadata["batch_size"] for j in batched] == [3, 3, 3]
    assert [j.metadata["batch_size"] for j in single] == [1, 1, 1]
    for b, s in zip(batched, single, strict=True):
        assert [a.seed for a in b.artifacts] == [a.seed for a in s.artifacts]
        for pb, ps in zip(pixels(b), pixels(s), strict=True):
            assert np.array_equal(pb, ps)  # batch-invariant linear layers: the same bits


def test_per_sample_linear_is_batch_invariant_and_undone(tiny_sd) -> None:  # type: ignore[no-untyped-def]
    layer = tiny_sd.unet.time_embedding.linear_1
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(8, layer.in_features, generator=gen),  # an embedding: one row per sample
              torch.randn(8, 5, layer.in_features, generator=gen),
              torch.randn(8, 2, 3, layer.in_features, generator=gen)]
    plain = [layer(x) for x in inputs]
    assert make_batch_invariant(tiny_sd) > 10 and is_batch_invariant(tiny_sd)
    try:
        assert isinstance(layer, torch.nn.Linear) and type(layer) is PerSampleLinear
        for x, expected in zip(inputs, plain, strict=True):
            out = layer(x)
            torch.testing.assert_close(out, expected)  # the same layer
            for k in (1, 2, 3):  # and a sample's result does not depend on its companions
                assert torch.equal(layer(x[:k]), out[:k])
        conv, norm = tiny_sd.vae.decoder.conv_in, tiny_sd.vae.decoder.mid_block.resnets[0].norm1
        assert type(conv) is OneDNNConv2d and type(norm) is ContiguousGroupNorm
        z = torch.randn(3, conv.in_channels, 8, 8, generator=gen)
        assert torch.equal(conv(z[:1]), conv(z)[:1])  # PyTorch's own kernel at batch 1 would differ
        strided = z.contiguous(memory_format=torch.channels_last)  # as an attention block can leave it
        assert torch.equal(conv(strided[:1]), conv(z)[:1]) and torch.equal(conv(strided), conv(z))
        torch.testing.assert_close(conv(z), torch.nn.functional.conv2d(z, conv.weight, conv.bias, padding=1))
        h = torch.randn(3, norm.num_channels, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
        assert torch.equal(norm(h[:1]), norm(h)[:1])
        wide = torch.randn(ROWS_2D + 1, layer.in_features, generator=gen)  # tokens flattened: one product
        torch.testing.assert_close(layer(wide), torch.nn.functional.linear(wide, layer.weight, layer.bias))
        latents = tiny_sd(["a cat", "a dog", "a cow"], num_inference_steps=2, output_type="latent",
                          generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)]).images
        alone = tiny_sd(["a dog"], num_inference_steps=2, output_type="latent",
                        generator=[torch.Generator().manual_seed(2)]).images
        assert torch.equal(latents[1:2], alone)
    finally:
        undo_batch_invariant(tiny_sd)
    assert not is_batch_invariant(tiny_sd) and type(layer) is torch.nn.Linear
    assert type(tiny_sd.vae.decoder.conv_in) is torch.nn.Conv2d


def test_incompatible_jobs_are_not_batched() -> None:
    a = JobRequest.from_flat({"prompt": "a", "model": "tiny-sd", "steps": 3, "width": 64, "height": 64})
    assert batch_key(a) == batch_key(a.model_copy(update={"prompt": "b", "priority": 9}))
    assert batch_key(a) != batch_key(JobRequest.from_flat({"prompt": "a", "model": "tiny-sd", "steps": 4,
                                                           "width": 64, "height": 64}))


def test_cancel_one_job_of_a_batch(isolated_home: Path, tmp_path: Path) -> None:
    def cancel_first(engine: LocalEngine, ids: list[str]) -> None:
        deadline = time.time() + 60
        while engine.get(ids[0]).progress.step < 2 and time.time() < deadline:
            time.sleep(0.01)
        engine.store.cancel(ids[0])

    bodies = [{"prompt": "a cat", "steps": 40, "seed": 1}, {"prompt": "a dog", "steps": 40, "seed": 2}]
    first, second = submit_all(Settings(home=isolated_home, default_model="tiny-sd", max_batch=2), bodies,
                               tmp_path, during=cancel_first)
    assert first.state == "cancelled" and first.artifacts == [] and first.progress.step < 40
    assert second.state == "succeeded" and second.metadata["batch_size"] == 2 and len(second.artifacts) == 1


def oom_once(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    real = image_module.generate_images
    calls: list[int] = []
    lock = threading.Lock()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(1)
            if len(calls) <= times:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(image_module, "generate_images", flaky)
    return calls


def test_out_of_memory_retries_with_memory_saving(isolated_home: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    oom_once(monkeypatch, times=1)
    (job,) = submit_all(Settings(home=isolated_home, default_model="tiny-sd"), [BODIES[0]], tmp_path)
    assert job.state == "succeeded", job.error
    assert "vae_tiling" in job.metadata["memory_saving"]


def test_out_of_memory_twice_fails_clearly_and_the_worker_goes_on(isolated_home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    oom_once(monkeypatch, times=2)
    failed, ok = submit_all(Settings(home=isolated_home, default_model="tiny-sd"), BODIES[:2], tmp_path)
    assert failed.state == "failed" and failed.error is not None
    assert failed.error.code == "out_of_memory"
    assert "ran out of memory at 64x64" in failed.error.message and "fix: lower" in failed.error.message
    assert ok.state == "succeeded"
