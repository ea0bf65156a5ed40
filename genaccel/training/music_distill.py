"""``genaccel distill`` for ``music-ref``: consistency distillation of the EDM mel DiT (the
SoundCTM / consistency-model recipe, with the teacher's classifier-free guidance baked in as in LCM).

The teacher denoises with EDM's preconditioning, ``D(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x,
0.25 ln s)``. The student is a copy of ``F`` read as a consistency function with the boundary
scalings of Song et al. 2023, ``c_skip = sd^2 / ((s - s_min)^2 + sd^2)`` and ``c_out = (s - s_min) sd
/ sqrt(s^2 + sd^2)``, so ``f(x, s_min) = x`` holds by construction. Training pairs are adjacent
points of a Karras sigma grid of ``grid`` points: a training mel is noised to ``s_n``, the teacher
(with guidance ``guidance``: one conditional and one unconditional pass) takes one Euler step of the
probability-flow ODE to ``s_{n+1}``, and the student at ``s_n`` is pulled towards an EMA copy of
itself at ``s_{n+1}`` (pseudo-Huber loss). The text encoder is the teacher's, frozen.

The student folder is a ``MelDiTPipeline`` whose scheduler is diffusers' own
``CMStochasticIterativeScheduler`` over the same grid (its ``step`` applies the same boundary
scalings), so sampling needs nothing written here; guidance is off by default (baked in).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genaccel.refdata.music import MelodySpec, caption_variant
from genaccel.training.common import plot_loss
from genaccel.training.consistency import Progress, pseudo_huber, train_consistency
from pipelines.mel_dit import MelDiTPipeline, dit_output, pack, text_states

SIGMA_MIN, SIGMA_MAX, SIGMA_DATA, RHO = 0.002, 80.0, 0.5, 7.0


@dataclass(frozen=True)
class MusicDistillConfig:
    steps: int = 1000
    batch: int = 8
    lr: float = 5e-5
    grid: int = 40
    """Points of the Karras sigma grid: training pairs are neighbours on it; the student samples on it."""
    guidance: float = 3.0
    """The teacher's classifier-free guidance scale on its ODE steps (the student bakes it in)."""
    ema_decay: float = 0.95
    huber_c: float = 0.03
    seed: int = 0
    student_steps: int = 4
    griffin_lim_iters: int = 16
    """Griffin-Lim iterations the student's codec decodes with (the teacher's codec keeps its own)."""


def karras_sigmas(n: int) -> torch.Tensor:
    """``n`` sigmas from ``SIGMA_MAX`` down to ``SIGMA_MIN`` (EDM's rho = 7 spacing), as
    ``CMStochasticIterativeScheduler`` places them."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    return ((hi + ramp * (lo - hi)) ** RHO).float()


def boundary_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out, c_in)`` of the consistency function, broadcastable over (B, C, N)."""
    s = sigma[:, None, None]
    c_skip = SIGMA_DATA**2 / ((s - SIGMA_MIN) ** 2 + SIGMA_DATA**2)
    c_out = (s - SIGMA_MIN) * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    return c_skip, c_out, 1 / (s**2 + SIGMA_DATA**2).sqrt()


class MusicDistiller:
    """One consistency-distillation run of a loaded ``MelDiTPipeline`` teacher (fp32)."""

    def __init__(self, teacher: MelDiTPipeline, config: MusicDistillConfig) -> None:
        if teacher.is_consistency_student:
            raise ValueError("the teacher is already a consistency student; distil from the EDM model")
        self.teacher, self.config = teacher, config
        for module in (teacher.text_encoder, teacher.transformer):
            module.requires_grad_(False).eval()
        self.student = copy.deepcopy(teacher.transformer).float().requires_grad_(True)
        self.target = copy.deepcopy(teacher.transformer).float().requires_grad_(False)
        self.sigmas = karras_sigmas(config.grid)
        with torch.no_grad():  # the empty caption's states: the guided teacher step's other branch
            self.uncond = text_states(teacher.text_encoder, teacher.tokens([""]))

    def consistency(self, model: Any, x: torch.Tensor, sigma: torch.Tensor, states: torch.Tensor,
                    pooled: torch.Tensor) -> torch.Tensor:
        c_skip, c_out, c_in = boundary_scalings(sigma)
        return c_skip * x + c_out * dit_output(model, c_in * x, 0.25 * torch.log(sigma), states, pooled)

    @torch.no_grad()
    def teacher_step(self, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, cond: tuple[Any, Any],
                     uncond: tuple[Any, Any]) -> torch.Tensor:
        """One Euler step of the guided probability-flow ODE from ``sigma`` to ``sigma_next``."""
        s = sigma[:, None, None]
        total = s**2 + SIGMA_DATA**2
        c_skip, c_out, c_in = SIGMA_DATA**2 / total, s * SIGMA_DATA / total.sqrt(), 1 / total.sqrt()
        both = dit_output(self.teacher.transformer, torch.cat([c_in * x] * 2), torch.cat([0.25 * torch.log(sigma)] * 2),
                          torch.cat([uncond[0], cond[0]]), torch.cat([uncond[1], cond[1]]))
        out_u, out_c = both.chunk(2)
        out = out_u + self.config.guidance * (out_c - out_u)
        denoised = c_skip * x + c_out * out
        return x + (sigma_next - sigma)[:, None, None] * (x - denoised) / s

    def loss(self, mels: torch.Tensor, tokens: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            cond = text_states(self.teacher.text_encoder, tokens)
        states, pooled = self.uncond
        uncond = (states.expand(len(tokens), -1, -1), pooled.expand(len(tokens), -1, -1))
        n = torch.randint(0, self.config.grid - 1, (mels.shape[0],), generator=gen)
        sigma, sigma_next = self.sigmas[n], self.sigmas[n + 1]
        x = mels + sigma[:, None, None] * torch.randn(mels.shape, generator=gen)
        online = self.consistency(self.student, x, sigma, *cond)
        with torch.no_grad():
            x_next = self.teacher_step(x, sigma, sigma_next, cond, uncond)
            target = self.consistency(self.target, x_next, sigma_next, *cond)
        return pseudo_huber(online, target, self.config.huber_c).mean()

    def train(self, mels: torch.Tensor, specs: list[MelodySpec], ckpt: Path,
              progress: Progress | None = None) -> list[float]:
        """Train on packed mels (N, C, tokens) with captions drawn afresh from each clip's spec."""
        c = self.config
        teacher = self.teacher

        def loss(rng: random.Random, gen: torch.Generator) -> torch.Tensor:
            idx = torch.randint(len(mels), (c.batch,), generator=gen)
            np_rng = np.random.default_rng(rng.getrandbits(32))
            tokens = teacher.tokens([caption_variant(specs[int(i)], np_rng) for i in idx])
            return self.loss(mels[idx].float(), tokens, gen)

        return train_consistency(self.student, self.target, loss, steps=c.steps, lr=c.lr, ema_decay=c.ema_decay,
                                 seed=c.seed, ckpt=ckpt, progress=progress)

    def save(self, out: Path, teacher_name: str, losses: list[float]) -> MelDiTPipeline:
        """The student folder (fp16): the teacher's text encoder and codec (fewer Griffin-Lim
        iterations), the EMA DiT, a consistency scheduler, and a ``genaccel.json`` card naming the teacher (so
        ``--profile turbo`` finds it) with the student's defaults."""
        from diffusers import CMStochasticIterativeScheduler

        t = self.teacher
        scheduler = CMStochasticIterativeScheduler(num_train_timesteps=self.config.grid, sigma_min=SIGMA_MIN,
                                                   sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA, rho=RHO,
                                                   clip_denoised=False)
        student = MelDiTPipeline(tokenizer=t.tokenizer, text_encoder=copy.deepcopy(t.text_encoder),
                                 transformer=copy.deepcopy(self.target).eval(), scheduler=scheduler)
        student.set_codec(replace(t.codec.config, griffin_lim_iters=self.config.griffin_lim_iters))
        student.to(torch.float16).save_pretrained(out, safe_serialization=True)  # fp16, as music-ref ships
        card = {"distilled_from": teacher_name, "mode": "consistency", "pipeline": "MelDiTPipeline",
                "defaults": {"steps": self.config.student_steps, "guidance_scale": 1.0},
                "config": asdict(self.config)}
        (out / "genaccel.json").write_text(json.dumps(card, indent=2) + "\n")
        plot_loss(losses, out / "loss_curve.png", f"{teacher_name} consistency distillation")
        return student


def distill_music(teacher: MelDiTPipeline, teacher_name: str, out: Path, work: Path, config: MusicDistillConfig,
                  *, data: int = 2000, progress: Progress | None = None) -> list[float]:
    """Render ``data`` synthesiser clips (cached in ``work``), train (resumable) and save to ``out``."""
    from genaccel.training.music_ref import cached_mels

    distiller = MusicDistiller(teacher, config)
    mels, specs = cached_mels(teacher.codec, work, data, config.seed + 1)
    patch = teacher.patch
    mels = pack(mels[..., : mels.shape[-1] // patch * patch].float(), patch)
    losses = distiller.train(mels, specs, work / "student.pt", progress=progress)
    distiller.save(out, teacher_name, losses)
    return losses
