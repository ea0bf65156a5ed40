"""``shapes-video``: the reference video model, a Latte transformer initialised from the image
DiT ``shapes-dit`` and trained on moving-shape clips (``genaccel.refdata.moving_shapes``).

Why Latte from the image DiT: Latte's spatial blocks, patch embedding, caption projection, timestep
embedding and output layer have PixArt's shapes, so every ``shapes-dit`` weight loads and the model
draws the right shape per frame from step 0; only the temporal blocks are new. They start as the
identity (their attention and feed-forward outputs zeroed), and are trained first with the three
caption words the image model never saw (``moving``, ``from``, ``to``: new tokenizer pieces and
embedding rows appended, every old id kept); ``--all-from STEP`` then trains every weight.

Latents come from the image VAE frame by frame (it encodes 256 frames in under a second here)
instead of training a video VAE. LattePipeline splits the prediction along channels (noise,
variance), so the model has ``out_channels = 2 * 4`` with the image model's output copied into the
noise half and the variance half zeroed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, LattePipeline, LatteTransformer3DModel
from transformers import T5EncoderModel, T5Tokenizer

from genaccel.refdata.moving_shapes import MOTION_WORDS, NATURAL_MOTION_WORDS, make_clips
from genaccel.training.common import load_checkpoint, plot_loss, save_checkpoint

log = logging.getLogger(__name__)
MAX_TOKENS = 32


def extend_tokenizer(tokenizer: T5Tokenizer, words: tuple[str, ...] = MOTION_WORDS) -> T5Tokenizer:
    """The image model's tokenizer with ``words`` appended as whole-word pieces (old ids unchanged)."""
    vocab = tokenizer.get_vocab()
    pieces = [(piece, -1.0 if piece.startswith("▁") and len(piece) > 1 else -10.0)
              for piece, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    scores = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -8.0}
    pieces = [(p, scores.get(p, s)) for p, s in pieces]
    pieces += [("▁" + w, -1.0) for w in words if "▁" + w not in vocab]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=MAX_TOKENS)


def natural_captions(data: int, seed: int) -> list[str]:
    """One natural caption per training clip (the specs of ``make_clips(data, frames, seed)``),
    deterministic in ``seed``."""
    from genaccel.refdata.moving_shapes import natural_video_caption, sample_motion_specs

    rng = np.random.default_rng([seed, 0x7A1C])
    return [natural_video_caption(spec, rng) for spec in sample_motion_specs(data, seed)]


def latte_from_image_dit(image_dit: Any, frames: int) -> LatteTransformer3DModel:
    """A Latte transformer with the image DiT's weights in every spatial part and identity
    temporal blocks."""
    c: Any = image_dit.config
    latte = LatteTransformer3DModel(
        num_attention_heads=c.num_attention_heads, attention_head_dim=c.attention_head_dim, in_channels=c.in_channels,
        out_channels=2 * c.in_channels, num_layers=c.num_layers, cross_attention_dim=c.cross_attention_dim,
        attention_bias=c.attention_bias, sample_size=c.sample_size, patch_size=c.patch_size,
        activation_fn=c.activation_fn, num_embeds_ada_norm=c.num_embeds_ada_norm, norm_type=c.norm_type,
        norm_elementwise_affine=c.norm_elementwise_affine, norm_eps=c.norm_eps, caption_channels=c.caption_channels,
        video_length=frames,
    )
    state = image_dit.state_dict()
    out_w, out_b = state.pop("proj_out.weight"), state.pop("proj_out.bias")
    missing, unexpected = latte.load_state_dict(state, strict=False)
    assert not unexpected, f"image DiT weights Latte has no place for: {unexpected[:5]}"
    assert all(k.startswith(("temporal_transformer_blocks.", "proj_out.")) for k in missing), missing[:5]
    with torch.no_grad():
        p, ch = int(c.patch_size), int(c.in_channels)
        given = out_w.shape[0] // (p * p)  # the image DiT's output channels: noise only, or noise + variance
        w = latte.proj_out.weight.view(p * p, 2 * ch, -1)  # rows ordered (patch pixel, channel)
        b = latte.proj_out.bias.view(p * p, 2 * ch)
        w.zero_()
        b.zero_()
        w[:, :given] = out_w.view(p * p, given, -1)
        b[:, :given] = out_b.view(p * p, given)
        for block in latte.temporal_transformer_blocks:
            for linear in (block.attn1.to_out[0], block.ff.net[-1]):
                linear.weight.zero_()
                linear.bias.zero_()
    return latte


@torch.no_grad()
def encode_clips(vae: AutoencoderKL, clips: np.ndarray, batch: int = 256) -> torch.Tensor:
    """uint8 clips (n, F, H, W, 3) -> scaled latents (n, C, F, h, w), frame by frame through the image VAE."""
    n, frames = clips.shape[:2]
    flat = torch.from_numpy(clips.reshape(n * frames, *clips.shape[2:])).permute(0, 3, 1, 2).float() / 127.5 - 1
    out = torch.cat([vae.encode(flat[i:i + batch]).latent_dist.mean for i in range(0, len(flat), batch)])
    out = out * float(vae.config.scaling_factor)
    return out.view(n, frames, *out.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


def load_image_model(image_dir: Path) -> dict[str, Any]:
    from diffusers import PixArtTransformer2DModel

    kw: dict[str, Any] = {"torch_dtype": torch.float32, "use_safetensors": True}
    return {
        "vae": AutoencoderKL.from_pretrained(image_dir / "vae", **kw).eval(),
        "transformer": PixArtTransformer2DModel.from_pretrained(image_dir / "transformer", **kw),
        "text_encoder": T5EncoderModel.from_pretrained(image_dir / "text_encoder", torch_dtype=torch.float32),
        "tokenizer": T5Tokenizer.from_pretrained(image_dir / "tokenizer"),
    }


def train_shapes_video(
    out: Path, work: Path, *, image_dir: Path, steps: int, frames: int = 8, batch: int = 8, data: int = 2000,
    seed: int = 0, lr: float = 2e-4, all_from: int | None = None, max_seconds: float | None = None,
    progress: Callable[[int, int, float], None] | None = None, max_rotation: float | None = None,
    cfg_dropout: float = 0.0, train_text: bool = False, natural: float = 0.0, pyramid: float = 0.0,
    direction_text: int = 0, caption_modulation: bool = False, caption_lr_scale: float = 1.0,
    high_noise: float = 0.0,
) -> list[float]:
    """Train and save ``shapes-video`` (a LattePipeline folder, fp16); returns the losses.

    Resumable from ``work/video.pt``. ``all_from``: the step from which every weight trains
    (before it: the temporal blocks and the new word embeddings only). ``max_seconds`` stops early
    (a smoke run) and still saves. ``max_rotation``: upright shapes (see
    :func:`genaccel.refdata.shapes.render`). ``cfg_dropout``: the share of captions replaced by the
    empty one, so classifier-free guidance has a trained unconditional branch. ``train_text``: the
    text encoder's layers train from the start too (at ``lr / 4``), not only the new word
    embeddings: the direction words' meaning sits in word order, which only the layers can read.
    ``natural``: the share of training captions drawn in a user's words instead of the fixed form
    (:func:`genaccel.refdata.moving_shapes.natural_video_caption`: attributes left out, synonyms,
    "going up", "falling"...); the tokenizer then learns every motion word.
    ``pyramid``: the training noise gets coarser noise added (:func:`pyramid_noise`), so the
    clip's faint trace that the last timesteps keep cannot tell the model where the shape goes
    and the caption has to.
    ``direction_text``: first tune the text encoder for this many steps so opposite directions
    give different token sets (:mod:`genaccel.training.direction_text`; the result goes to
    ``work/direction_text.json``), then keep it frozen while the video model trains.
    ``caption_modulation``: the model is a :class:`pipelines.caption_latte.CaptionLatteTransformer3DModel`
    (the pooled caption also shifts the timestep modulation of every block, temporal ones included);
    its caption MLP trains from the start with the temporal blocks, at ``caption_lr_scale * lr``
    (it starts at zero and the direction moves few pixels, so its gradients are small).
    ``high_noise``: the share of training timesteps drawn from the top quarter (750-999) instead of
    all 1,000, where a clip's layout and track are decided (sampling from a real clip noised to
    t=761 already follows the track it finds there).
    """
    torch.manual_seed(seed)
    parts = load_image_model(image_dir)
    vae, text_encoder = parts["vae"], parts["text_encoder"]
    words = NATURAL_MOTION_WORDS if natural or direction_text else MOTION_WORDS
    tokenizer = extend_tokenizer(parts["tokenizer"], words)
    old_vocab = text_encoder.get_input_embeddings().weight.shape[0]
    text_encoder.resize_token_embeddings(len(tokenizer))
    work.mkdir(parents=True, exist_ok=True)
    if direction_text and load_checkpoint(work / "video.pt") is None:
        from genaccel.training.direction_text import tune_direction_text

        tuned = tune_direction_text(text_encoder, tokenizer, steps=direction_text, seed=seed)
        (work / "direction_text.json").write_text(json.dumps(tuned, indent=2) + "\n")
        log.info("text encoder tuned for direction: %s", tuned)
    latte = latte_from_image_dit(parts["transformer"], frames)
    if caption_modulation:
        from pipelines.caption_latte import with_caption_modulation

        latte = with_caption_modulation(latte)
    first = ("temporal_transformer_blocks.", "caption_mlp.")  # what trains from step 0
    tilt = "" if max_rotation is None else f"-tilt{math.degrees(max_rotation):g}"
    cache = work / f"clips-{data}-{frames}-{seed}{tilt}.pt"
    if cache.is_file():
        saved = torch.load(cache)
        latents, captions = saved["latents"], saved["captions"]
    else:
        clips, specs = make_clips(data, frames, seed, max_rotation=max_rotation)
        latents, captions = encode_clips(vae, clips), [s.caption() for s in specs]
        torch.save({"latents": latents, "captions": captions}, cache)
    # padded to the longest caption only: LattePipeline trims a single prompt's embeddings to its
    # tokens, so padding the model never sees at inference is masked out here (caption_bias)
    spoken = natural_captions(data, seed) if natural else []
    both = tokenizer(captions + spoken, padding="longest", max_length=MAX_TOKENS, truncation=True,
                     return_tensors="pt").input_ids
    tokens, natural_tokens = both[: len(captions)], both[len(captions):]
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000)
    temporal = [p for n, p in latte.named_parameters() if n.startswith(first[0])]
    caption_mlp = [p for n, p in latte.named_parameters() if n.startswith(first[1])]
    embeddings = text_encoder.get_input_embeddings().weight
    groups: list[dict[str, Any]] = [{"params": temporal}]
    if caption_mlp:
        groups.append({"params": caption_mlp, "lr": lr * caption_lr_scale})
    if direction_text:  # tuned above (or restored from the checkpoint): frozen from here on
        text_encoder.requires_grad_(False)
    else:
        groups.append({"params": [embeddings], "weight_decay": 0.0})
    layers = [p for n, p in text_encoder.named_parameters() if "shared" not in n and "embed_tokens" not in n]
    if train_text and not direction_text:
        groups.append({"params": layers, "lr": lr / 4})
    empty = tokenizer([""], padding="max_length", max_length=tokens.shape[1], return_tensors="pt").input_ids[0] \
        if cfg_dropout else None
    opt = torch.optim.AdamW(groups, lr=lr)
    start, losses = 0, []
    state = load_checkpoint(work / "video.pt")
    if state is not None:
        latte.load_state_dict(state["latte"])
        text_encoder.load_state_dict(state["text_encoder"])
        start, losses = state["step"], state["losses"]
    spatial = [p for n, p in latte.named_parameters() if not n.startswith(first)]
    for p in spatial:  # no weight gradients for what the optimizer does not update yet (faster steps)
        p.requires_grad_(False)
    rng = torch.Generator().manual_seed(seed + start)
    began = time.time()
    step = start
    for step in range(start, steps):
        training_all = all_from is not None and step >= all_from
        if training_all and not spatial[0].requires_grad:
            for p in spatial:
                p.requires_grad_(True)
            opt.add_param_group({"params": spatial, "lr": lr / 4})
        idx = torch.randint(0, len(latents), (batch,), generator=rng)
        x0, tok = latents[idx], tokens[idx]
        if natural:  # the same clips, described in a user's words
            tok = torch.where((torch.rand(batch, generator=rng) < natural)[:, None], natural_tokens[idx], tok)
        dropped = torch.zeros(batch, dtype=torch.bool)
        if empty is not None:  # caption dropout: the unconditional branch CFG needs
            dropped = torch.rand(batch, generator=rng) < cfg_dropout
            tok = torch.where(dropped[:, None], empty[None], tok)
        noise = torch.randn(x0.shape, generator=rng)
        if pyramid:
            noise = pyramid_noise(noise, pyramid, rng)
        t = training_timesteps(batch, high_noise, rng)
        noisy = scheduler.add_noise(x0, noise, t)
        mask = (tok != 0).long()
        cond = text_encoder(tok, attention_mask=mask)[0]
        extra = {"pooling_mask": pooling_mask(mask, dropped)} if caption_modulation else {}
        pred = latte(noisy, timestep=t, encoder_hidden_states=cond,
                     encoder_attention_mask=caption_bias(mask, x0.shape[2]), **extra).sample[:, : x0.shape[1]]
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        if not training_all and embeddings.grad is not None:  # old word embeddings stay the image model's
            embeddings.grad[:old_vocab] = 0  # type: ignore[index]
        torch.nn.utils.clip_grad_norm_(latte.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps, losses[-1])
        if (step + 1) % 100 == 0 or step + 1 == steps:
            save_checkpoint(work / "video.pt", {"latte": latte.state_dict(), "text_encoder": text_encoder.state_dict(),
                                                "step": step + 1, "losses": losses})
        if max_seconds is not None and time.time() - began > max_seconds:
            save_checkpoint(work / "video.pt", {"latte": latte.state_dict(), "text_encoder": text_encoder.state_dict(),
                                                "step": step + 1, "losses": losses})
            break
    pipe = LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae, transformer=latte.eval(),
                         scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 clip_sample=False, set_alpha_to_one=False, steps_offset=1))
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    plot_loss(losses, out / "loss_curve.png", "shapes-video Latte (temporal blocks first)")
    return losses


def pyramid_noise(noise: torch.Tensor, discount: float, rng: torch.Generator, levels: int = 3) -> torch.Tensor:
    """``noise`` (B, C, F, h, w) plus noise drawn at 1/2, 1/4, 1/8 of its frames and size and
    stretched back (weights ``discount ** level``), rescaled to unit spread: multi-resolution
    ("pyramid") noise, the video form of offset noise.

    Why: with SD's scaled-linear betas the last training timestep still holds 7 % of the clip, and
    a shape's track summed over its patch and frames can be read through white noise; the model
    then takes the direction from that trace, which pure noise at sampling time does not have
    (measured on the session-8 ``shapes-video``: direction 1.0 when sampling starts from a real
    clip noised to t=761, 0.33 from pure noise). Coarse noise hides the trace."""
    b, c, f, h, w = noise.shape
    out = noise.clone()
    for level in range(1, levels + 1):
        size = (max(1, f >> level), max(1, h >> level), max(1, w >> level))
        coarse = torch.randn((b, c, *size), generator=rng)
        out += discount**level * torch.nn.functional.interpolate(coarse, size=(f, h, w), mode="trilinear")
    return out / out.std(dim=(1, 2, 3, 4), keepdim=True)


def training_timesteps(batch: int, high_noise: float, rng: torch.Generator) -> torch.Tensor:
    """Uniform over 0-999, with a ``high_noise`` share drawn from the top quarter (750-999) instead."""
    t = torch.randint(0, 1000, (batch,), generator=rng)
    if high_noise:
        late = torch.randint(750, 1000, (batch,), generator=rng)
        t = torch.where(torch.rand(batch, generator=rng) < high_noise, late, t)
    return t


def pooling_mask(mask: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """The tokens the pooled caption averages in training, as LattePipeline will hand them over:
    a caption's own tokens (the pipeline trims a single prompt's embeddings to them), and every
    position of a dropped (empty) caption, since the pipeline pads the negative prompt to the
    prompt's length and passes the padding on."""
    return torch.where(dropped[:, None], torch.ones_like(mask), mask)


def caption_bias(mask: torch.Tensor, frames: int) -> torch.Tensor | None:
    """Latte's spatial cross-attention mask for ``mask`` (B, L): an additive bias per frame
    ``(B * frames, 1, L)`` (Latte hands the mask to its blocks as given), or None when nothing is padded."""
    if bool(mask.all()):
        return None
    bias = (1 - mask.float()) * -10000.0
    return bias.repeat_interleave(frames, dim=0)[:, None, :]


def smoothed(losses: list[float], window: int = 20) -> tuple[float, float]:
    """Mean loss of the first and the last ``window`` steps."""
    if not losses:
        return math.nan, math.nan
    w = max(1, min(window, len(losses) // 2))
    return float(np.mean(losses[:w])), float(np.mean(losses[-w:]))
