"""``genaccel distill`` for ``speech-ref``: consistency distillation of the flow-matching mel
decoder (CoMoSpeech's idea, in flow-matching time as in consistency flow matching).

The teacher's decoder predicts the flow velocity ``v`` with ``x_t = (1 - t) noise + t mel``. The
student is a copy of it, read as a consistency function ``f(x_t, t) = x_t + (1 - t) v(x_t, t)``:
one Euler jump to ``t = 1``, so ``f(x_1, 1) = x_1`` (the boundary condition) holds by construction.
Training pairs come from the teacher's own ODE: on a grid of ``grid`` sway-sampled times, the
teacher takes one Euler step ``t_n -> t_{n+1}`` from a noised training mel, and the student at
``t_n`` is pulled towards an EMA copy of itself at ``t_{n+1}`` (masked pseudo-Huber loss on the
real frames). The phoneme encoder, duration predictor and coarse mel are the teacher's, unchanged.

The student samples with ``sampler = "consistency"`` (``pipelines.speech_ref.SpeechRefModel``):
each step jumps to the clean mel and re-noises to the next time. Written here rather than with
diffusers' ``LCMScheduler`` because the decoder is a flow-matching model on mel frames with its own
conditioning, which diffusers' distillation scripts do not cover.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genaccel.refdata import mel as melspec
from genaccel.training.common import plot_loss
from genaccel.training.consistency import Progress, pseudo_huber, train_consistency
from pipelines.speech_ref import SpeechRefModel, regulate, rotary, sway_schedule


@dataclass(frozen=True)
class SpeechDistillConfig:
    steps: int = 1500
    batch: int = 16
    lr: float = 1e-4
    grid: int = 32
    """Teacher ODE steps between noise and mel: pairs are adjacent points of this sway schedule."""
    ema_decay: float = 0.95
    huber_c: float = 0.01
    seed: int = 0
    student_steps: int = 2


class SpeechDistiller:
    """One consistency-distillation run of a loaded ``SpeechRefModel`` teacher."""

    def __init__(self, teacher: SpeechRefModel, config: SpeechDistillConfig) -> None:
        if teacher.cfg.sampler != "euler":
            raise ValueError("the teacher is already a consistency student; distil from the flow model")
        self.teacher, self.config = teacher, config
        for module in (teacher.encoder, teacher.transformer):
            module.requires_grad_(False).eval()
        self.student = copy.deepcopy(teacher.transformer).float().requires_grad_(True)
        self.target = copy.deepcopy(teacher.transformer).float().requires_grad_(False)
        self.times = sway_schedule(config.grid, teacher.cfg.sway)

    def _f(self, model: Any, x: torch.Tensor, t: torch.Tensor, mu: torch.Tensor, state: torch.Tensor,
           rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        v = self.teacher.velocity(x, mu, t, state, rope, transformer=model)
        return x + (1 - t)[:, None, None] * v

    @torch.no_grad()
    def condition(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher encoder's coarse mel (aligned by the true durations, as in training) and voice state."""
        enc = self.teacher.encoder
        hidden = enc(batch["ids"], batch["voice"])
        mu = enc.coarse(regulate(hidden, batch["frames"], batch["mel"].shape[-1])).transpose(1, 2)
        return mu, enc.voice(batch["voice"])[:, None]

    def loss(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        x1, mask = batch["mel"], batch["mask"][:, None].float()
        mu, state = self.condition(batch)
        rope = rotary(self.teacher.cfg, x1.shape[-1])
        n = torch.randint(0, self.config.grid, (x1.shape[0],), generator=gen)
        t, t_next = self.times[n], self.times[n + 1]
        x0 = torch.randn(x1.shape, generator=gen)
        x = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
        online = self._f(self.student, x, t, mu, state, rope)
        with torch.no_grad():
            v = self.teacher.velocity(x, mu, t, state, rope)
            x_next = x + (t_next - t)[:, None, None] * v  # one teacher Euler step
            target = self._f(self.target, x_next, t_next, mu, state, rope)
        err = pseudo_huber(online, target, self.config.huber_c)
        return (err * mask).sum() / (mask.sum() * melspec.N_MELS)

    def train(self, batches: Callable[[random.Random], dict[str, torch.Tensor]], ckpt: Path,
              progress: Progress | None = None) -> list[float]:
        c = self.config
        return train_consistency(self.student, self.target, lambda rng, gen: self.loss(batches(rng), gen),
                                 steps=c.steps, lr=c.lr, ema_decay=c.ema_decay, seed=c.seed, ckpt=ckpt,
                                 progress=progress)

    def save(self, out: Path, teacher_name: str, losses: list[float]) -> None:
        """The student folder: the teacher's encoder, the EMA decoder, ``sampler = consistency`` and a
        ``genaccel.json`` card that names the teacher (so ``--profile turbo`` finds it)."""
        cfg = replace(self.teacher.cfg, sampler="consistency", default_steps=self.config.student_steps)
        student = SpeechRefModel(cfg, self.teacher.encoder, self.target.eval())
        student.save(out)
        card = {"distilled_from": teacher_name, "mode": "consistency", "pipeline": "SpeechRefModel",
                "defaults": {"steps": self.config.student_steps}, "config": asdict(self.config)}
        (out / "genaccel.json").write_text(json.dumps(card, indent=2) + "\n")
        plot_loss(losses, out / "loss_curve.png", f"{teacher_name} consistency distillation")


def speech_batches(teacher: SpeechRefModel, batch: int, seed: int, limit: int | None = None,
                   ) -> Callable[[random.Random], dict[str, torch.Tensor]]:
    """A batch maker over espeak-ng renderings of the training sentences (held-out ones never)."""
    from genaccel.refdata.speech import render_corpus, renderings, split_sentences
    from genaccel.training.speech_ref import collate, example

    texts, _ = split_sentences(seed=0)
    if limit is not None:
        texts = random.Random(seed).sample(texts, min(limit, len(texts)))
    data = [example(u, teacher.ids) for u in render_corpus(texts, renderings(), seed=seed + 11)]
    return lambda rng: collate(rng.sample(data, min(batch, len(data))))


def distill_speech(teacher: SpeechRefModel, teacher_name: str, out: Path, work: Path, config: SpeechDistillConfig,
                   *, data: int | None = None, progress: Progress | None = None) -> list[float]:
    """Render the data, train (resumable from ``work``) and save the student to ``out``."""
    distiller = SpeechDistiller(teacher, config)
    work.mkdir(parents=True, exist_ok=True)
    batches = speech_batches(teacher, config.batch, config.seed, limit=data)
    losses = distiller.train(batches, work / "student.pt", progress=progress)
    distiller.save(out, teacher_name, losses)
    return losses
