"""The Latte transformer with the pooled caption in its timestep modulation
(``pipelines.caption_latte``): starts out as the model it was made from, reads the caption
through the modulation once trained, saves and loads under its own class, and trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.caption_latte import CaptionLatteTransformer3DModel, with_caption_modulation
from pipelines.tiny_video import LATTE_FRAMES, build_tiny_latte


@pytest.fixture(scope="module")
def latte():  # type: ignore[no-untyped-def]
    pipe = build_tiny_latte()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, LATTE_FRAMES, 8, 8, generator=gen), torch.tensor([700, 700]),
            torch.randn(2, 5, 32, generator=gen))


def _perturb(model: CaptionLatteTransformer3DModel) -> None:
    """A caption term as training leaves it: no longer zero."""
    for p in model.caption_mlp[-1].parameters():
        torch.nn.init.normal_(p, std=0.5)


def test_a_fresh_caption_term_leaves_the_model_unchanged_and_a_trained_one_reads_the_caption(latte) -> None:  # type: ignore[no-untyped-def]
    x, t, text = _inputs()
    model = with_caption_modulation(latte.transformer)
    assert isinstance(model, CaptionLatteTransformer3DModel) and model.config.caption_in_modulation
    with torch.no_grad():
        before = latte.transformer(x, timestep=t, encoder_hidden_states=text).sample
        assert torch.equal(model(x, timestep=t, encoder_hidden_states=text).sample, before)
        _perturb(model)
        one = model(x, timestep=t, encoder_hidden_states=text).sample
        # the same token set in another order: cross-attention alone cannot tell, the mean cannot either
        shuffled = model(x, timestep=t, encoder_hidden_states=text.flip(1)).sample
        other = model(x, timestep=t, encoder_hidden_states=text + 1.0).sample
    assert not torch.allclose(one, before, atol=1e-4)
    torch.testing.assert_close(shuffled, one, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(other, one, atol=1e-4)
    assert model._caption_shift is None  # nothing left over between calls


def test_the_pooled_caption_ignores_padding_as_the_pipeline_hands_it_over(latte) -> None:  # type: ignore[no-untyped-def]
    from genaccel.training.shapes_video import pooling_mask

    model = with_caption_modulation(latte.transformer)
    tokens = torch.randn(1, 3, 32)
    padded = torch.cat([tokens, torch.randn(1, 2, 32)], dim=1)
    zeroed = torch.cat([tokens, torch.zeros(1, 2, 32)], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    trimmed = model.pooled_caption(tokens)  # one prompt: LattePipeline trims it to its tokens
    torch.testing.assert_close(model.pooled_caption(padded, mask), trimmed)  # training: the token mask
    torch.testing.assert_close(model.pooled_caption(zeroed), trimmed)  # several prompts: padding zeroed
    # a dropped (empty) caption is averaged over its padding too, as the pipeline's negative prompt is
    assert pooling_mask(mask, torch.tensor([True])).tolist() == [[1, 1, 1, 1, 1]]
    assert pooling_mask(mask, torch.tensor([False])).tolist() == mask.tolist()


def test_a_saved_model_loads_back_under_its_class_through_the_served_loader(latte, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from diffusers import LattePipeline

    from genaccel.settings import Settings
    from pipelines.loader import load_pipeline
    from pipelines.registry import ModelRegistry

    model = with_caption_modulation(latte.transformer)
    _perturb(model)
    pipe = LattePipeline(tokenizer=latte.tokenizer, text_encoder=latte.text_encoder, vae=latte.vae,
                         transformer=model, scheduler=latte.scheduler)
    pipe.save_pretrained(tmp_path / "video")
    info = ModelRegistry(Settings(home=tmp_path / "home")).resolve(str(tmp_path / "video"))
    served = load_pipeline(info, torch.device("cpu"), torch.float32)
    assert type(served.transformer) is CaptionLatteTransformer3DModel
    x, t, text = _inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(served.transformer(x, timestep=t, encoder_hidden_states=text).sample,
                                   model(x, timestep=t, encoder_hidden_states=text).sample)
    frames = served("a red circle moving left", num_inference_steps=2, guidance_scale=3.0, height=32, width=32,
                    video_length=LATTE_FRAMES, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert np.isfinite(np.asarray(frames)).all() and np.asarray(frames).shape[1] == LATTE_FRAMES


def test_high_noise_draws_that_share_of_timesteps_from_the_top_quarter() -> None:
    from genaccel.training.shapes_video import training_timesteps

    plain = training_timesteps(4000, 0.0, torch.Generator().manual_seed(0))
    late = training_timesteps(4000, 0.5, torch.Generator().manual_seed(0))
    assert int(plain.min()) >= 0 and int(plain.max()) <= 999
    assert abs(float((plain >= 750).float().mean()) - 0.25) < 0.03
    assert abs(float((late >= 750).float().mean()) - 0.625) < 0.03  # half from 750-999, half uniform


@pytest.mark.training
def test_the_trainer_makes_and_trains_the_caption_term(tiny_dit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from diffusers import DiffusionPipeline

    from genaccel.training.shapes_video import train_shapes_video

    tiny_dit.save_pretrained(tmp_path / "image")
    out = tmp_path / "video"
    losses = train_shapes_video(out, tmp_path / "work", image_dir=tmp_path / "image", steps=3, frames=4, batch=2,
                                data=4, cfg_dropout=0.5, caption_modulation=True, lr=1e-3, caption_lr_scale=10,
                                high_noise=0.5)
    assert len(losses) == 3 and all(np.isfinite(losses))
    saved = DiffusionPipeline.from_pretrained(out).transformer
    assert type(saved) is CaptionLatteTransformer3DModel
    assert float(saved.caption_mlp[-1].weight.detach().abs().max()) > 0  # trained from step 0 (it starts at zero)
