"""The training loop every consistency distillation here shares (speech-ref's flow decoder,
music-ref's EDM DiT): an online student, an EMA target copy of it, AdamW, gradient clipping,
a resumable checkpoint every 100 steps. What differs between them, the pairs and the
consistency function, is the ``loss`` callable each passes in."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch

from genaccel.training.common import ema_update, load_checkpoint, save_checkpoint

Progress = Callable[[int, int, float], None]
Loss = Callable[[random.Random, torch.Generator], torch.Tensor]


def train_consistency(student: torch.nn.Module, target: torch.nn.Module, loss: Loss, *, steps: int, lr: float,
                      ema_decay: float, seed: int, ckpt: Path, progress: Progress | None = None) -> list[float]:
    """Train ``student`` on ``loss(rng, gen)`` (which reads ``target``), pull ``target`` towards it
    by EMA after each step, and resume from ``ckpt`` when it exists. Returns every step's loss."""
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    start, losses = 0, []
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    state = load_checkpoint(ckpt)
    if state is not None:
        student.load_state_dict(state["student"])
        target.load_state_dict(state["target"])
        opt.load_state_dict(state["opt"])
        start, losses = int(state["step"]), list(state["losses"])
        gen.set_state(state["gen"])
        rng.setstate(state["rng"])
    student.train()
    for step in range(start, steps):
        value = loss(rng, gen)
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        ema_update(target, student, ema_decay)
        losses.append(value.item())
        if progress:
            progress(step + 1, steps, losses[-1])
        if (step + 1) % 100 == 0 or step + 1 == steps:
            save_checkpoint(ckpt, {"student": student.state_dict(), "target": target.state_dict(),
                                   "opt": opt.state_dict(), "step": step + 1, "losses": losses,
                                   "gen": gen.get_state(), "rng": rng.getstate()})
    student.eval()
    return losses


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Element-wise pseudo-Huber distance ``sqrt((a - b)^2 + c^2) - c`` (Song & Dhariwal 2023)."""
    return torch.sqrt((a - b) ** 2 + c**2) - c
