"""``genaccel distill``: few-step students from a teacher pipeline we serve (UNet families).

- ``lcm``: latent consistency distillation (Luo et al. 2023, "Latent Consistency Models"):
  skipping-step DDIM solver on the teacher's classifier-free-guided noise prediction, the
  guidance scale as a condition of the student (``time_cond_proj_dim``), an EMA target network
  and the consistency boundary condition of diffusers' ``LCMScheduler``. The student runs with
  ``LCMScheduler`` in 2-8 steps and one denoiser pass per step.
- ``guidance``: guidance distillation (Meng et al. 2023, "On Distillation of Guided Diffusion
  Models", stage one): the student, conditioned on the guidance scale, matches the teacher's
  CFG prediction in one pass; it keeps the teacher's scheduler and step count.

Training data: latents of reference-generator images (``--data N``) or of teacher samples for
the prompts in a file. Resumable from ``work``; the output is a pipeline folder with a
``genaccel.json`` model card (default steps, guidance handling) that loads by name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from genaccel.errors import InvalidRequest
from genaccel.training.common import load_checkpoint, plot_loss, save_checkpoint

log = logging.getLogger(__name__)
Progress = Callable[[int, int, float], None]
Mode = Literal["lcm", "guidance"]
W_EMBED_DIM = 256


@dataclass(frozen=True)
class DistillConfig:
    mode: Mode = "lcm"
    steps: int = 1000
    batch: int = 16
    lr: float = 2e-4
    guidance_min: float = 2.0
    guidance_max: float = 10.0
    ddim_timesteps: int = 50
    ema_decay: float = 0.95
    huber_c: float = 0.001
    seed: int = 0
    student_steps: int = 4
    guidance_default: float = 7.5


def guidance_embedding(scale: torch.Tensor) -> torch.Tensor:
    """The embedding ``StableDiffusionPipeline`` feeds a guidance-conditioned UNet (of scale - 1)."""
    return StableDiffusionPipeline.get_guidance_scale_embedding(None, scale - 1.0, embedding_dim=W_EMBED_DIM)


def make_student(teacher: Any) -> UNet2DConditionModel:
    """The teacher's UNet plus a zero-initialised guidance-scale input: at start it equals the teacher."""
    config = {k: v for k, v in teacher.config.items() if k != "_use_default_values"}
    config["time_cond_proj_dim"] = W_EMBED_DIM
    student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all("cond_proj" in k for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.float()


def reference_latents(pipe: Any, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Scaled VAE latents and captions of reference-generator images (training split)."""
    from genaccel.refdata.shapes import make_dataset

    images, specs = make_dataset(count, seed, split="train")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    with torch.no_grad():
        latents = torch.cat([pipe.vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, count, 256)])
    return latents * pipe.vae.config.scaling_factor, [s.caption() for s in specs]


def teacher_latents(pipe: Any, prompts: list[str], seed: int, steps: int = 25, chunk: int = 16,
                    guidance: float = 7.5) -> torch.Tensor:
    """Final latents of the teacher's own samples for ``prompts`` (data for prompt-only distillation)."""
    out = []
    for i in range(0, len(prompts), chunk):
        part = prompts[i:i + chunk]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(part))]
        out.append(pipe(part, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                        output_type="latent").images)
    return torch.cat(out)


class Distiller:
    """One distillation run of ``teacher`` (a loaded pipeline with a UNet)."""

    def __init__(self, teacher: Any, config: DistillConfig) -> None:
        if getattr(teacher, "unet", None) is None:
            raise InvalidRequest("teacher", type(teacher).__name__, "genaccel distill trains UNet students only "
                                 "in this version", "pick an SD-architecture teacher such as shapes-sd")
        if teacher.unet.config.get("time_cond_proj_dim") is not None:
            raise InvalidRequest("teacher", type(teacher).__name__, "is already guidance-distilled",
                                 "distil from the original model")
        self.teacher, self.config = teacher, config
        for module in (teacher.unet, teacher.text_encoder, teacher.vae):
            module.requires_grad_(False).eval()
        self.noise = DDPMScheduler.from_config(teacher.scheduler.config)
        self.lcm = LCMScheduler.from_config(teacher.scheduler.config)
        self.alphas = self.noise.alphas_cumprod.float()
        total = self.noise.config.num_train_timesteps
        self.skip = total // config.ddim_timesteps
        self.ddim = torch.from_numpy((np.arange(1, config.ddim_timesteps + 1) * self.skip).round().astype(np.int64) - 1)
        self.student = make_student(teacher.unet)
        self.target = make_student(teacher.unet).requires_grad_(False)
        self.target.load_state_dict(self.student.state_dict())

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> torch.Tensor:
        tok = self.teacher.tokenizer
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return self.teacher.text_encoder(ids)[0]

    def _x0(self, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas[t].view(-1, 1, 1, 1)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    def _boundary(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.lcm.get_scalings_for_boundary_condition_discrete(int(v)) for v in t]
        c_skip = torch.tensor([p[0] for p in pairs], dtype=torch.float32).view(-1, 1, 1, 1)
        c_out = torch.tensor([p[1] for p in pairs], dtype=torch.float32).view(-1, 1, 1, 1)
        return c_skip, c_out

    def _consistency(self, unet: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                     w_emb: torch.Tensor) -> torch.Tensor:
        eps = unet(x, t, cond, timestep_cond=w_emb).sample
        c_skip, c_out = self._boundary(t)
        return c_skip * x + c_out * self._x0(eps, x, t)

    @torch.no_grad()
    def _teacher_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
        eps = self.teacher.unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, cond])).sample
        eps_u, eps_c = eps.chunk(2)
        return eps_u + scale.view(-1, 1, 1, 1) * (eps_c - eps_u)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.config
        b = x0.shape[0]
        scale = c.guidance_min + (c.guidance_max - c.guidance_min) * torch.rand(b, generator=gen)
        w_emb = guidance_embedding(scale)
        noise = torch.randn(x0.shape, generator=gen)
        if c.mode == "guidance":
            t = torch.randint(0, self.noise.config.num_train_timesteps, (b,), generator=gen)
            x = self.noise.add_noise(x0, noise, t)
            pred = self.student(x, t, cond, timestep_cond=w_emb).sample
            return F.mse_loss(pred, self._teacher_eps(x, t, cond, uncond, scale))
        n = torch.randint(0, c.ddim_timesteps, (b,), generator=gen)
        t = self.ddim[n]
        t_prev = (t - self.skip).clamp(min=0)
        x = self.noise.add_noise(x0, noise, t)
        online = self._consistency(self.student, x, t, cond, w_emb)
        with torch.no_grad():
            eps = self._teacher_eps(x, t, cond, uncond, scale)
            a_prev = self.alphas[t_prev].view(-1, 1, 1, 1)
            x_prev = a_prev.sqrt() * self._x0(eps, x, t) + (1 - a_prev).sqrt() * eps  # DDIM step t -> t_prev
            target = self._consistency(self.target, x_prev, t_prev, cond, w_emb)
        return (torch.sqrt((online - target) ** 2 + c.huber_c**2) - c.huber_c).mean()

    def train(self, latents: torch.Tensor, captions: list[str], ckpt: Path,
              progress: Progress | None = None) -> list[float]:
        c = self.config
        opt = torch.optim.AdamW(self.student.parameters(), lr=c.lr, weight_decay=0.0)
        start, losses = 0, []
        state = load_checkpoint(ckpt)
        if state is not None:
            self.student.load_state_dict(state["student"])
            self.target.load_state_dict(state["target"])
            opt.load_state_dict(state["opt"])
            start, losses = int(state["step"]), list(state["losses"])
        gen = torch.Generator().manual_seed(c.seed)
        if state is not None:
            gen.set_state(state["gen"])
        uncond = self._embed([""])
        self.student.train()
        for step in range(start, c.steps):
            idx = torch.randint(len(latents), (c.batch,), generator=gen)
            cond = self._embed([captions[int(i)] for i in idx])
            loss = self.loss(latents[idx], cond, uncond.expand_as(cond), gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for p_t, p_s in zip(self.target.parameters(), self.student.parameters(), strict=True):
                    p_t.mul_(c.ema_decay).add_(p_s.detach(), alpha=1 - c.ema_decay)
            losses.append(loss.item())
            if progress:
                progress(step + 1, c.steps, losses[-1])
            if (step + 1) % 100 == 0 or step + 1 == c.steps:
                save_checkpoint(ckpt, {"student": self.student.state_dict(), "target": self.target.state_dict(),
                                       "opt": opt.state_dict(), "step": step + 1, "losses": losses,
                                       "gen": gen.get_state()})
        self.student.eval()
        return losses

    def save(self, out: Path, teacher_name: str, losses: list[float]) -> None:
        t = self.teacher
        lcm = self.config.mode == "lcm"
        unet = self.target if lcm else self.student  # LCM ships the EMA target, as in the paper
        scheduler = self.lcm if lcm else t.scheduler
        pipe = StableDiffusionPipeline(vae=t.vae, text_encoder=t.text_encoder, tokenizer=t.tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       image_encoder=None, requires_safety_checker=False)
        out.mkdir(parents=True, exist_ok=True)
        dtype = t.unet.dtype
        pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
        pipe.to(dtype)
        card = {
            "distilled_from": teacher_name, "mode": self.config.mode,
            "defaults": {"steps": self.config.student_steps if lcm else None,
                         "guidance_scale": self.config.guidance_default},
            "guidance": "embedded: one denoiser pass per step; negative prompts are ignored",
            "config": asdict(self.config),
        }
        (out / "genaccel.json").write_text(json.dumps(card, indent=2) + "\n")
        plot_loss(losses, out / "loss_curve.png", f"{teacher_name} {self.config.mode} distillation")


def distill(teacher_pipe: Any, teacher_name: str, out: Path, work: Path, config: DistillConfig, *,
            data: int = 4000, prompts: list[str] | None = None, progress: Callable[[str], Progress] | None = None,
            ) -> list[float]:
    """Prepare data (cached in ``work``), train (resumable) and save the student to ``out``."""
    distiller = Distiller(teacher_pipe, config)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "data.pt"
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        latents, captions = stored["latents"], list(stored["captions"])
    else:
        if prompts:
            latents = teacher_latents(teacher_pipe, prompts, config.seed)
            captions = list(prompts)
        else:
            latents, captions = reference_latents(teacher_pipe, data, config.seed + 7)
        torch.save({"latents": latents, "captions": captions}, cache)
    losses = distiller.train(latents.float(), captions, work / "student.pt",
                             progress=progress(config.mode) if progress else None)
    distiller.save(out, teacher_name, losses)
    return losses
