"""Teach the reference video model's text encoder which way a caption says the shape goes.

Why this exists: the DiT reads the caption through cross-attention, which sees the text
encoder's token outputs as a set (T5 adds no absolute positions). "moving from left to right"
and "moving from right to left" hold the same words, so their token sets differ only by what
the encoder's two layers make of the order. Measured on the session-8 ``shapes-video`` encoder
(a permutation-invariant chamfer distance between the token sets of two captions): 0.095
between the two horizontal directions, 1.56 between a horizontal and a vertical one, 3.2 between
two colours. The video model cannot follow a difference its input barely has, and trained from
pure noise it moved shapes the asked way about as often as chance allows once the axis is
right (direction 0.33-0.42; run 2 trained the text layers with the diffusion loss, ``--train-text``,
and still reached 0.42).

So before the video model trains, the encoder is tuned for a few hundred steps with a probe
that reads the direction the way the DiT must: attention pooling over the token set (a learned
query; no positions), then unit-norm class weights, so the direction has to show as a
difference of several units in the tokens, as large as a colour's. A second term keeps every
still-image caption's tokens where the image DiT learnt them (and, weaker, the video captions'),
so what the spatial blocks already read does not move. Nothing here is specific to Latte: it
tunes any ``T5EncoderModel`` on the moving-shape captions.

No well-kept library does this (it is a data- and model-specific auxiliary objective), hence
our own small loop.

Measured (session 12, docs/video.md): 300 steps put opposite directions 4.5 apart (from 0.23),
but a Latte run trained on the tuned encoder still read 0.42 direction: its denoiser's output
moved 0.6 % between opposite directions at t=950 against 9 % for another colour. The caption now
says which way; the model needs a path that carries it to the temporal blocks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from genaccel.metrics.video import parse_video_caption
from genaccel.refdata.moving_shapes import DIRECTIONS, natural_video_caption, sample_motion_specs
from genaccel.refdata.shapes import sample_specs

DIRECTION_NAMES = tuple(DIRECTIONS)


def direction_captions(count: int, seed: int) -> tuple[list[str], list[int]]:
    """Video captions, half in the fixed form and half in a user's words, with the direction
    each names as an index of ``DIRECTION_NAMES`` (-1 where a caption leaves it out)."""
    rng = np.random.default_rng([seed, 0xD1])
    texts, labels = [], []
    for i, spec in enumerate(sample_motion_specs(count, seed)):
        text = spec.caption() if i % 2 == 0 else natural_video_caption(spec, rng)
        named = parse_video_caption(text) or {}
        texts.append(text)
        labels.append(DIRECTION_NAMES.index(named["direction"]) if "direction" in named else -1)
    return texts, labels


def image_captions(count: int, seed: int) -> list[str]:
    """Still-image captions as ``shapes-dit`` learnt them: half fixed, half natural."""
    rng = np.random.default_rng([seed, 0x1A])
    return [s.caption() if i % 2 == 0 else s.caption(rng) for i, s in enumerate(sample_specs(count, seed, "all"))]


class DirectionProbe(torch.nn.Module):
    """Attention pooling over a token set, then unit-norm class weights: the logits
    are the pooled vector's projections on four unit directions, so they grow only as the tokens
    themselves move apart."""

    def __init__(self, width: int, classes: int = len(DIRECTION_NAMES)) -> None:
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(width) / width**0.5)
        self.weight = torch.nn.Parameter(torch.randn(classes, width))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (tokens @ self.query) / tokens.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
        pooled = (scores.softmax(dim=1)[..., None] * tokens).sum(dim=1)
        return pooled @ torch.nn.functional.normalize(self.weight, dim=1).T


def encode(text_encoder: Any, tokenizer: Any, texts: list[str], max_length: int = 32
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token outputs ``(B, L, D)`` and the attention mask ``(B, L)`` of ``texts``."""
    ids = tokenizer(texts, padding="longest", max_length=max_length, truncation=True, return_tensors="pt")
    return text_encoder(ids.input_ids, attention_mask=ids.attention_mask)[0], ids.attention_mask


def masked_mean_square(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x ** 2`` over the tokens ``mask`` keeps, ``x`` ``(B, L, D)``, ``mask`` ``(B, L)``."""
    m = mask[..., None].float()
    return ((x**2) * m).sum() / (m.sum() * x.shape[-1])


def set_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Chamfer distance between two token sets ``(n, D)`` and ``(m, D)``: what a cross-attention
    without positions can tell apart."""
    d = torch.cdist(a, b)
    return float(d.min(dim=1).values.mean() + d.min(dim=0).values.mean()) / 2


@torch.no_grad()
def direction_gap(text_encoder: Any, tokenizer: Any,
                  caption: str = "a large red circle moving from {} on a white background") -> dict[str, float]:
    """Set distances between the token sets of one caption with opposite directions, and with
    another colour for scale."""
    def tokens(text: str) -> torch.Tensor:
        out, mask = encode(text_encoder, tokenizer, [text])
        return out[0][mask[0].bool()]

    lr_, rl = tokens(caption.format("left to right")), tokens(caption.format("right to left"))
    tb, bt = tokens(caption.format("top to bottom")), tokens(caption.format("bottom to top"))
    other = tokens(caption.replace("red", "blue").format("left to right"))
    return {"left_right": set_distance(lr_, rl), "top_bottom": set_distance(tb, bt),
            "axis": set_distance(lr_, tb), "colour": set_distance(lr_, other)}


def tune_direction_text(text_encoder: Any, tokenizer: Any, *, steps: int = 300, batch: int = 64, seed: int = 0,
                        lr: float = 1e-3, keep: float = 1.0, keep_video: float = 1.0,
                        progress: Callable[[int, int, float, float], None] | None = None) -> dict[str, Any]:
    """Tune ``text_encoder`` in place so each caption's direction shows in its token set (see the
    module docstring); returns the probe's held-out accuracy and ``direction_gap`` before and after."""
    reference = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    before = direction_gap(text_encoder, tokenizer)
    texts, labels = direction_captions(4000, seed + 101)
    held_texts, held_labels = direction_captions(400, seed + 202)
    stills = image_captions(4000, seed + 303)
    width = int(text_encoder.config.d_model)
    probe = DirectionProbe(width)
    text_encoder.train().requires_grad_(True)
    opt = torch.optim.AdamW([*text_encoder.parameters(), *probe.parameters()], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, 0x5E])
    target = torch.tensor(labels)
    for step in range(steps):
        idx = rng.integers(0, len(texts), batch)
        tokens, mask = encode(text_encoder, tokenizer, [texts[i] for i in idx])
        y = target[idx]
        named = y >= 0
        ce = torch.nn.functional.cross_entropy(probe(tokens[named], mask[named]), y[named])
        with torch.no_grad():
            ref_video, _ = encode(reference, tokenizer, [texts[i] for i in idx])
        drift_video = masked_mean_square(tokens - ref_video, mask)
        still = [stills[i] for i in rng.integers(0, len(stills), batch)]
        new_still, still_mask = encode(text_encoder, tokenizer, still)
        with torch.no_grad():
            ref_still, _ = encode(reference, tokenizer, still)
        drift_still = masked_mean_square(new_still - ref_still, still_mask)
        loss = ce + keep * drift_still + keep_video * drift_video
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, steps, float(ce.detach()), float(drift_still.detach()))
    text_encoder.eval().requires_grad_(False)
    with torch.no_grad():
        tokens, mask = encode(text_encoder, tokenizer, held_texts)
        y = torch.tensor(held_labels)
        named = y >= 0
        accuracy = float((probe(tokens[named], mask[named]).argmax(dim=1) == y[named]).float().mean())
        still = image_captions(400, seed + 404)
        new_still, still_mask = encode(text_encoder, tokenizer, still)
        ref_still, _ = encode(reference, tokenizer, still)
        drift = float(masked_mean_square(new_still - ref_still, still_mask))
        scale = float(masked_mean_square(ref_still, still_mask))
    return {"steps": steps, "probe_accuracy_held_out": round(accuracy, 4),
            "still_caption_drift": round(drift / scale, 5),  # mean squared change / mean square of the tokens
            "gap_before": {k: round(v, 3) for k, v in before.items()},
            "gap_after": {k: round(v, 3) for k, v in direction_gap(text_encoder, tokenizer).items()}}
