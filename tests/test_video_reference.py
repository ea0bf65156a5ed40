"""The reference video model's data and training script: moving-shape clips whose direction the
centroid check reads back, a Latte initialised from an image DiT that equals it frame by frame,
and a few training steps end to end into a pipeline folder the video adapter serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genaccel.refdata.moving_shapes import DIRECTIONS, MotionSpec, direction_of, make_clips, render_clip
from genaccel.training.shapes_video import caption_bias, extend_tokenizer, latte_from_image_dit, train_shapes_video


def test_clips_move_the_way_their_captions_say() -> None:
    clips, specs = make_clips(12, 8, seed=3)
    assert clips.shape == (12, 8, 64, 64, 3) and clips.dtype == np.uint8
    assert [direction_of(c) for c in clips] == [s.direction for s in specs]
    spec = MotionSpec("star", "yellow", "large", "white", "right to left")
    assert spec.caption() == "a large yellow star moving from right to left on a white background"
    for direction in DIRECTIONS:
        clip = render_clip(MotionSpec("circle", "red", "small", "grey", direction), 9, np.random.default_rng(0))
        assert direction_of(clip) == direction
    still = np.repeat(clips[0][:1], 8, axis=0)
    assert direction_of(still) is None  # an evaluator can say "none"


def test_latte_from_the_image_dit_equals_it_frame_by_frame(tiny_dit) -> None:  # type: ignore[no-untyped-def]
    image = tiny_dit.transformer
    latte = latte_from_image_dit(image, frames=4)
    latte.temp_pos_embed.zero_()  # the one fixed part Latte adds; training absorbs it
    x, cond, t = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 5, 32), torch.tensor([500])
    with torch.no_grad():
        video = latte(x, timestep=t, encoder_hidden_states=cond).sample
        frames = image(x[0].permute(1, 0, 2, 3), encoder_hidden_states=cond.repeat(4, 1, 1), timestep=t.repeat(4),
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    torch.testing.assert_close(video[0, :8].permute(1, 0, 2, 3), frames, atol=1e-4, rtol=1e-4)


def test_padded_captions_with_their_mask_equal_the_trimmed_ones_the_pipeline_feeds(  # type: ignore[no-untyped-def]
        tiny_dit) -> None:
    latte = latte_from_image_dit(tiny_dit.transformer, frames=4)
    x, cond, t = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 5, 32), torch.tensor([500, 500])
    padded = torch.cat([cond, torch.randn(2, 3, 32)], 1)  # three pad tokens' states
    mask = torch.tensor([[1] * 5 + [0] * 3] * 2)
    assert caption_bias(torch.ones(2, 5), 4) is None
    with torch.no_grad():
        trimmed = latte(x, timestep=t, encoder_hidden_states=cond).sample
        masked = latte(x, timestep=t, encoder_hidden_states=padded,
                       encoder_attention_mask=caption_bias(mask, 4)).sample
        unmasked = latte(x, timestep=t, encoder_hidden_states=padded).sample
    torch.testing.assert_close(masked, trimmed, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked, trimmed, atol=1e-3)


def test_extended_tokenizer_keeps_every_old_id(tiny_dit) -> None:  # type: ignore[no-untyped-def]
    old = tiny_dit.tokenizer
    new = extend_tokenizer(old)
    assert len(new) == len(old) + 3
    assert new("a red circle").input_ids == old("a red circle").input_ids
    assert len(new("moving from to").input_ids) == 4  # three whole words and </s>


@pytest.mark.training
def test_a_few_training_steps_make_a_served_video_model(tiny_dit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from genaccel.settings import Settings
    from genaccel.spec import JobRequest
    from pipelines.prepare import prepare_request
    from pipelines.registry import ModelRegistry

    tiny_dit.save_pretrained(tmp_path / "image")
    from pipelines.registry import reference_models

    out = tmp_path / "assets" / "shapes-video"
    losses = train_shapes_video(out, tmp_path / "work", image_dir=tmp_path / "image", steps=3,
                                frames=4, batch=2, data=4)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert reference_models(tmp_path / "assets")["shapes-video"].modality == "video"  # registered when shipped
    settings = Settings(home=tmp_path / "home")
    request, info = prepare_request(JobRequest.from_flat({"modality": "video", "prompt": "a ball moving",
                                                          "model": str(out)}),
                                    ModelRegistry(settings), settings)
    assert info.pipeline_class == "LattePipeline" and info.family == "video-dit"
    assert request.params.num_frames == 4  # Latte's fixed length, read from the folder


@pytest.mark.training
def test_upright_clips_caption_dropout_and_text_layers_train(tiny_dit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import math

    from diffusers import LattePipeline

    tiny_dit.save_pretrained(tmp_path / "image")
    before = {n: p.clone() for n, p in tiny_dit.text_encoder.named_parameters() if "layer" in n}
    out = tmp_path / "video"
    losses = train_shapes_video(out, tmp_path / "work", image_dir=tmp_path / "image", steps=2, frames=4, batch=2,
                                data=4, max_rotation=math.radians(10), cfg_dropout=0.5, train_text=True, lr=1e-2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert list((tmp_path / "work").glob("clips-4-4-0-tilt10.pt"))  # upright clips cached apart from the others
    trained = dict(LattePipeline.from_pretrained(out).text_encoder.named_parameters())
    assert any(not torch.allclose(trained[n].float(), p.float(), atol=1e-3) for n, p in before.items())


def test_natural_captions_train_and_their_words_are_whole_tokens(tiny_dit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from diffusers import LattePipeline

    tiny_dit.save_pretrained(tmp_path / "image")
    out = tmp_path / "video"
    losses = train_shapes_video(out, tmp_path / "work", image_dir=tmp_path / "image", steps=2, frames=4, batch=2,
                                data=4, natural=0.5)
    assert len(losses) == 2 and all(np.isfinite(losses))
    tokenizer = LattePipeline.from_pretrained(out).tokenizer
    for word in ("falling", "rising", "going", "sliding", "up", "travelling"):
        assert len(tokenizer(word).input_ids) == 2, word  # one learnt word (and </s>), not pieces


def test_pyramid_noise_hides_a_clips_coarse_trace_and_trains(tiny_dit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Multi-resolution noise: unit spread, but a region's mean over frames varies several times
    more than white noise's (what hides the faint track the last timesteps keep); the trainer
    takes it as ``pyramid``."""
    from genaccel.training.shapes_video import pyramid_noise

    gen = torch.Generator().manual_seed(0)
    white = torch.randn(64, 4, 8, 16, 16, generator=gen)
    coarse = pyramid_noise(white, 0.8, gen)
    assert coarse.shape == white.shape
    assert abs(float(coarse.std()) - 1.0) < 0.02
    patch_mean = coarse[..., :4, :4].mean(dim=(2, 3, 4)).std()
    assert float(patch_mean) > 3 * float(white[..., :4, :4].mean(dim=(2, 3, 4)).std())
    assert torch.equal(pyramid_noise(white, 0.8, torch.Generator().manual_seed(1)),
                       pyramid_noise(white, 0.8, torch.Generator().manual_seed(1)))  # seeded
    tiny_dit.save_pretrained(tmp_path / "image")
    losses = train_shapes_video(tmp_path / "video", tmp_path / "work", image_dir=tmp_path / "image", steps=2,
                                frames=4, batch=2, data=4, pyramid=0.8)
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_direction_captions_are_labelled_as_the_parser_reads_them() -> None:
    from genaccel.metrics.video import parse_video_caption
    from genaccel.training.direction_text import DIRECTION_NAMES, direction_captions

    texts, labels = direction_captions(60, seed=3)
    assert len(texts) == len(labels) == 60 and direction_captions(60, seed=3) == (texts, labels)
    for text, label in zip(texts, labels, strict=True):
        named = (parse_video_caption(text) or {}).get("direction")
        assert label == (DIRECTION_NAMES.index(named) if named else -1), text
    assert texts[0].startswith("a ") and "moving from" in texts[0]  # half in the fixed form
    assert set(labels) >= {0, 1, 2, 3}


def test_tuning_the_text_encoder_for_direction_separates_opposite_directions(tiny_dit) -> None:  # type: ignore[no-untyped-def]
    """A few steps of the direction probe pull "left to right" and "right to left" apart in the
    token set the DiT's cross-attention sees, and the trainer then keeps the encoder frozen."""
    import copy

    from genaccel.refdata.moving_shapes import NATURAL_MOTION_WORDS
    from genaccel.training.direction_text import direction_gap, tune_direction_text

    encoder = copy.deepcopy(tiny_dit.text_encoder).float()
    tokenizer = extend_tokenizer(tiny_dit.tokenizer, NATURAL_MOTION_WORDS)
    encoder.resize_token_embeddings(len(tokenizer))
    before = direction_gap(encoder, tokenizer)
    torch.manual_seed(0)
    result = tune_direction_text(encoder, tokenizer, steps=60, batch=32, lr=3e-3)
    assert result["gap_before"] == pytest.approx({k: round(v, 3) for k, v in before.items()}, abs=1e-3)
    assert result["gap_after"]["left_right"] > 2 * before["left_right"]
    assert result["gap_after"]["top_bottom"] > 2 * before["top_bottom"]
    assert 0.0 <= result["still_caption_drift"] < 0.5
    assert not any(p.requires_grad for p in encoder.parameters())


def test_the_trainer_tunes_then_freezes_the_text_encoder(tiny_dit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    from diffusers import LattePipeline

    tiny_dit.save_pretrained(tmp_path / "image")
    out, work = tmp_path / "video", tmp_path / "work"
    train_shapes_video(out, work, image_dir=tmp_path / "image", steps=1, frames=4, batch=2, data=4,
                       direction_text=3, all_from=0)
    tuned = json.loads((work / "direction_text.json").read_text())
    assert tuned["steps"] == 3 and set(tuned["gap_after"]) == {"left_right", "top_bottom", "axis", "colour"}
    first = {n: p.clone() for n, p in LattePipeline.from_pretrained(out).text_encoder.named_parameters()}
    train_shapes_video(out, work, image_dir=tmp_path / "image", steps=3, frames=4, batch=2, data=4,
                       direction_text=3, all_from=0, lr=1e-2)  # resumed: not tuned again, and frozen
    again = dict(LattePipeline.from_pretrained(out).text_encoder.named_parameters())
    assert all(torch.equal(again[n], p) for n, p in first.items())


def test_video_scores_read_the_data_right_and_can_say_none() -> None:
    from genaccel.bench.run import EVALUATOR
    from genaccel.metrics.evaluator import Evaluator
    from genaccel.metrics.video import parse_video_caption, score_clips

    evaluator = Evaluator.load(EVALUATOR)
    clips, specs = make_clips(16, 8, seed=11)
    prompts = [s.caption() for s in specs]
    assert parse_video_caption(prompts[0]) == {k: getattr(specs[0], k) for k in
                                               ("size", "colour", "shape", "direction", "background")}
    scores = score_clips(evaluator, list(clips), prompts)
    assert scores["direction_accuracy"] == 1.0 and scores["scored"] == 16
    assert scores["exact_match"] is not None and scores["exact_match"] >= 0.75
    assert scores["temporal_consistency"] is not None and scores["temporal_consistency"] > 0.9
    still = [np.repeat(c[:1], 8, axis=0) for c in clips[:4]]  # right picture, no motion: never exact
    assert score_clips(evaluator, still, prompts[:4])["exact_match"] == 0.0
    assert parse_video_caption("a cat") is None  # names nothing the evaluator reads
    assert parse_video_caption("an orange hexagon moving up") is None  # outside the vocabulary: not scored


def test_natural_video_captions_name_what_the_parser_reads_back() -> None:
    """Users' words ("going up", "falling", "gray", "big"): the parser reads back exactly the
    attributes a natural caption names, and a clip is scored on those only."""
    from genaccel.bench.run import EVALUATOR
    from genaccel.metrics.evaluator import Evaluator
    from genaccel.metrics.video import parse_video_caption, score_clips
    from genaccel.refdata.moving_shapes import natural_video_caption, sample_motion_specs

    rng = np.random.default_rng(5)
    captions = set()
    for spec in sample_motion_specs(300, seed=4):
        text = natural_video_caption(spec, rng)
        captions.add(text)
        named = parse_video_caption(text)
        assert named, text
        assert all(getattr(spec, k) == v for k, v in named.items()), (text, named)
    assert len(captions) > 250  # varied, not one template
    assert parse_video_caption("a big yellow star going up on gray") == {
        "shape": "star", "colour": "yellow", "size": "large", "background": "grey", "direction": "bottom to top"}
    assert parse_video_caption("on black, a small blue square moving from right to left")["direction"] == \
        "right to left"
    assert parse_video_caption("a red circle") == {"shape": "circle", "colour": "red"}  # no direction: not scored
    evaluator = Evaluator.load(EVALUATOR)
    clips, specs = make_clips(4, 8, seed=11)
    partial = [f"a {s.colour} {s.shape}" for s in specs]  # a still clip of the right shape would match
    scores = score_clips(evaluator, list(clips), partial)
    assert scores["scored"] == 4 and scores["direction_accuracy"] is None and scores["size_accuracy"] is None
