"""Train ``speech-ref`` (``pipelines.speech_ref``) on espeak-ng renderings of the training
sentences: durations from espeak-ng's per-phoneme start times, the coarse mel by L1, the mel
decoder by conditional flow matching (``x_t = (1 - t) x0 + t x1``, target ``x1 - x0``), all three
losses at once, for a fixed wall-clock budget. Held-out sentences are never trained on."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genaccel.refdata import mel as melspec
from genaccel.refdata.speech import VOICES, Utterance, render_corpus, renderings, split_sentences
from pipelines.speech_ref import (
    MEL_MEAN,
    MEL_STD,
    PhonemeEncoder,
    SpeechRefConfig,
    SpeechRefModel,
    build_decoder,
    corpus_phonemes,
    regulate,
    rotary,
)


@dataclass
class Example:
    ids: torch.Tensor  # (L,)
    frames: torch.Tensor  # (L,) mel frames per phoneme, summing to T
    mel: torch.Tensor  # (64, T) normalised
    voice: int
    speed: float


def example(u: Utterance, ids: dict[str, int]) -> Example:
    mel = (melspec.log_mel(u.samples) - MEL_MEAN) / MEL_STD
    total = mel.shape[1]
    bounds = [0] + [min(total, round(s * melspec.FRAMES_PER_S)) for s in u.starts[1:]] + [total]
    frames = torch.tensor(np.maximum(np.diff(bounds), 0))
    return Example(torch.tensor([ids[p] for p in u.phonemes]), frames, mel, list(VOICES).index(u.voice), u.speed)


def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
    length = max(int(e.frames.sum()) for e in batch)
    n = max(len(e.ids) for e in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    frames = torch.zeros(len(batch), n, dtype=torch.long)
    mel = torch.full((len(batch), melspec.N_MELS, length), (np.log(melspec.LOG_FLOOR) - MEL_MEAN) / MEL_STD)
    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = e.ids
        frames[i, : len(e.frames)] = e.frames
        t = int(e.frames.sum())
        mel[i, :, :t] = e.mel[:, :t]
        mask[i, :t] = True
    return {"ids": ids, "frames": frames, "mel": mel, "mask": mask,
            "voice": torch.tensor([e.voice for e in batch]), "speed": torch.tensor([e.speed for e in batch])}


def losses(model: SpeechRefModel, b: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    enc, dit = model.encoder, model.transformer
    hidden = enc(b["ids"], b["voice"])
    ph_mask = (b["ids"] > 0).float()
    logd = enc.durations(hidden, b["speed"].float())
    dur = (((logd - torch.log1p(b["frames"].float())) ** 2) * ph_mask).sum() / ph_mask.sum()
    length = b["mel"].shape[-1]
    mu = enc.coarse(regulate(hidden, b["frames"], length)).transpose(1, 2)  # (B, 64, T)
    m = b["mask"][:, None].float()
    prior = (((mu - b["mel"]).abs()) * m).sum() / (m.sum() * melspec.N_MELS)
    x1 = b["mel"]
    x0 = torch.randn(x1.shape, generator=gen)
    t = torch.rand(x1.shape[0], generator=gen)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    state = enc.voice(b["voice"])[:, None]
    v = dit(hidden_states=torch.cat([xt, mu.detach()], 1), timestep=t, encoder_hidden_states=state,
            global_hidden_states=state, rotary_embedding=rotary(model.cfg, length), return_dict=False)[0]
    flow = (((v - (x1 - x0)) ** 2) * m).sum() / (m.sum() * melspec.N_MELS)
    return {"duration": dur, "prior": prior, "flow": flow}


def train(out: Path, minutes: float, seed: int = 0, batch_size: int = 16, per_text: int = 2, lr: float = 3e-4,
          log_every: int = 20, save_every_s: float = 300.0) -> dict[str, object]:
    """Train for ``minutes`` of wall clock (rendering included) and save to ``out``."""
    t0 = time.time()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    train_texts, held = split_sentences(seed=0)
    cfg = SpeechRefConfig(phonemes=corpus_phonemes())
    model = SpeechRefModel(cfg, PhonemeEncoder(cfg), build_decoder(cfg))
    utts = render_corpus(train_texts, renderings(), seed=seed, per_text=per_text)
    data = [example(u, model.ids) for u in utts]
    render_s = time.time() - t0
    params = [*model.encoder.parameters(), *model.transformer.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    model.encoder.train()
    model.transformer.train()
    history: list[dict[str, float]] = []
    step, last_save = 0, time.time()
    while time.time() - t0 < minutes * 60:
        batch = collate(rng.sample(data, batch_size))
        parts = losses(model, batch, gen)
        loss = parts["duration"] + parts["prior"] + parts["flow"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % log_every == 0 or step == 1:
            history.append({"step": step, "s": round(time.time() - t0, 1),
                            **{k: round(float(v.detach()), 4) for k, v in parts.items()}})
            print(json.dumps(history[-1]), flush=True)
        if time.time() - last_save > save_every_s:
            _save(model, out, step, history, render_s, minutes, seed, len(data), len(held))
            last_save = time.time()
    return _save(model, out, step, history, render_s, minutes, seed, len(data), len(held))


def _save(model: SpeechRefModel, out: Path, step: int, history: list[dict[str, float]], render_s: float,
          minutes: float, seed: int, n_train: int, n_held: int) -> dict[str, object]:
    model.encoder.eval()
    model.transformer.eval()
    model.save(out)
    model.encoder.train()
    model.transformer.train()
    log: dict[str, object] = {
        "command": f"python scripts/train_speech_ref.py --out {out} --minutes {minutes:g} --seed {seed}",
        "steps": step, "train_utterances": n_train, "heldout_sentences": n_held, "render_s": round(render_s, 1),
        "parameters": {"encoder": sum(p.numel() for p in model.encoder.parameters()),
                       "decoder": sum(p.numel() for p in model.transformer.parameters())},
        "history": history,
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return log


def first_last(history: list[dict[str, float]], key: str, n: int = 5) -> tuple[float, float]:
    vals = [h[key] for h in history]
    return float(np.mean(vals[:n])), float(np.mean(vals[-n:]))


__all__ = ["collate", "example", "first_last", "losses", "train"]
