"""Train the speech evaluator (``genaccel.metrics.speech``): the word recogniser and the voice
classifier, on espeak-ng renderings of the training sentences in the corpus voices (and, for the words,
eight more voices), a quarter of
them through the mel -> Griffin-Lim round trip the reference model's vocoder makes. Tested on the
held-out sentences: words in a voice no part of the project trains on, voices in the corpus voices."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from genaccel.metrics.speech import VOICE_NAMES, WORD_HEADS, SlotNet, features, word_scores
from genaccel.refdata.mel import griffin_lim, log_mel
from genaccel.refdata.speech import (
    EXTRA_VOICES,
    HELDOUT_VOICE,
    SLOTS,
    VOICES,
    Utterance,
    parse_words,
    render_corpus,
    renderings,
    split_sentences,
)


def _targets(utts: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    words = torch.tensor([[SLOTS[i].index(w) for i, w in enumerate(parse_words(u.text) or ())] for u in utts])
    voices = torch.tensor([VOICE_NAMES.index(u.voice) if u.voice in VOICE_NAMES else 0 for u in utts])
    return words, voices


def _features(utts: list[Utterance], roundtrip: float, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    out = []
    for u in utts:
        wav = u.samples
        if rng.random() < roundtrip:
            wav = griffin_lim(log_mel(wav), iters=16).numpy()
        out.append(features(wav))
    return torch.stack(out)


def _fit(net: SlotNet, x: torch.Tensor, targets: torch.Tensor, steps: int, seed: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    losses = []
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=gen)
        shift = int(torch.randint(-4, 5, (1,), generator=gen))
        xb = torch.roll(xb, shift, dims=-1)
        heads = net.split(net(xb))
        loss = sum(F.cross_entropy(h, targets[idx, i]) for i, h in enumerate(heads))
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))  # type: ignore[union-attr]
    return losses


def train(out: Path, seed: int = 0, steps: int = 1500, per_text: int = 2) -> dict[str, object]:
    """Train both networks, test them, write ``words/voices.safetensors`` and ``train_log.json``."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    t0 = time.time()
    train_texts, held_texts = split_sentences(seed=0)
    utts = render_corpus(train_texts, renderings(), seed=seed, per_text=per_text)
    x = _features(utts, roundtrip=0.25, seed=seed)
    words, voices = _targets(utts)
    extra = render_corpus(train_texts, renderings(voices=tuple(EXTRA_VOICES)), seed=seed + 5, per_text=1)
    x_extra = _features(extra, roundtrip=0.25, seed=seed + 5)
    render_s = time.time() - t0
    word_net, voice_net = SlotNet(WORD_HEADS), SlotNet((len(VOICE_NAMES),))
    word_losses = _fit(word_net, torch.cat([x, x_extra]), torch.cat([words, _targets(extra)[0]]), steps, seed)
    voice_losses = _fit(voice_net, x, voices[:, None], steps // 2, seed + 1)
    word_net.eval()
    voice_net.eval()

    # tests: held-out sentences, held-out voice (words); corpus voices (voices); each also through Griffin-Lim
    held_voice = render_corpus(held_texts, renderings(voices=(HELDOUT_VOICE,)), seed=seed + 2)
    held_corpus = render_corpus(held_texts, renderings(), seed=seed + 3)
    results: dict[str, float] = {}
    with torch.no_grad():
        for name, test, rt in (("heldout_voice", held_voice, 0.0), ("heldout_voice_griffinlim", held_voice, 1.0),
                               ("corpus_voices", held_corpus, 0.0), ("corpus_voices_griffinlim", held_corpus, 1.0)):
            xt = _features(test, roundtrip=rt, seed=seed)
            heads = word_net.split(word_net(xt))
            said = [tuple(SLOTS[s][int(heads[s][i].argmax())] for s in range(len(SLOTS))) for i in range(len(test))]
            scores = word_scores(said, [parse_words(u.text) or () for u in test])
            results[f"{name}_word_acc"] = round(scores["word_acc"], 4)
            results[f"{name}_exact_match"] = round(scores["exact_match"], 4)
            if name.startswith("corpus"):
                vt = _targets(test)[1]
                results[f"{name}_voice_acc"] = round(float((voice_net(xt).argmax(-1) == vt).float().mean()), 4)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in word_net.state_dict().items()}, out / "words.safetensors")
    save_file({k: v.contiguous() for k, v in voice_net.state_dict().items()}, out / "voices.safetensors")
    log: dict[str, object] = {
        "command": f"python scripts/train_speech_evaluator.py --out {out} --seed {seed} --steps {steps}",
        "train_utterances": len(utts), "train_sentences": len(train_texts), "heldout_sentences": len(held_texts),
        "heldout_voice": HELDOUT_VOICE, "voices": list(VOICES), "word_only_voices": list(EXTRA_VOICES),
        "extra_utterances": len(extra), "steps": steps,
        "parameters": {"words": sum(p.numel() for p in word_net.parameters()),
                       "voices": sum(p.numel() for p in voice_net.parameters())},
        "render_s": round(render_s, 1), "total_s": round(time.time() - t0, 1),
        "final_loss": {"words": float(np.mean(word_losses[-50:])), "voices": float(np.mean(voice_losses[-50:]))},
        "results": results,
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    return log
