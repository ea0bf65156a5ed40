"""``genaccel distill``: few-step students from a teacher pipeline we serve (SD-UNet, PixArt DiT and
Latte video DiT; speech-ref's decoder is in ``genaccel.training.speech_distill``).

- ``lcm``: latent consistency distillation (Luo et al. 2023, "Latent Consistency Models"):
  skipping-step DDIM solver on the teacher's classifier-free-guided noise prediction, the
  guidance scale as a condition of the student (``time_cond_proj_dim``), an EMA target network
  and the consistency boundary condition of diffusers' ``LCMScheduler``. The student runs with
  ``LCMScheduler`` in 2-8 steps and one denoiser pass per step.
- ``guidance``: guidance distillation (Meng et al. 2023, "On Distillation of Guided Diffusion
  Models", stage one): the student, conditioned on the guidance scale, matches the teacher's
  CFG prediction in one pass; it keeps the teacher's scheduler and step count.
- ``kd``: distillation of a given, smaller student (``genaccel prune``'s recovery, as in
  BK-SDM): output distillation of the unguided and the classifier-free-guided noise prediction
  (guidance scale drawn per sample, so the text-dependent part of the prediction, which CFG
  amplifies and a plain output loss barely sees, is learned), feature distillation of every
  down, mid and up block output the student shares with the teacher (relative MSE), and a small
  share of the plain denoising loss.

A UNet student takes the guidance scale as a condition (``time_cond_proj_dim``, as LCM-SD).
A PixArt or Latte transformer has no such input, so its student is distilled at one guidance scale,
as PIXART-δ does, and runs without classifier-free guidance (``guidance_scale`` 1). Latents may be
images ``(B, C, h, w)`` or videos ``(B, C, F, h, w)``: per-sample scalars broadcast over either.

Training data: latents of reference-generator images (``--data N``) or of teacher samples for
the prompts in a file. Resumable from ``work``; the output is a pipeline folder with a
``genaccel.json`` model card (default steps, guidance handling) that loads by name.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    DDPMScheduler,
    LattePipeline,
    LCMScheduler,
    PixArtAlphaPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

from genaccel.errors import InvalidRequest
from genaccel.training.common import ema_update, load_checkpoint, plot_loss, save_checkpoint
from genaccel.training.shapes_video import MAX_TOKENS, caption_bias, encode_clips

log = logging.getLogger(__name__)
Conditioning = tuple[torch.Tensor, torch.Tensor | None]
"""Text embeddings and their attention mask (None where the denoiser takes none)."""
Progress = Callable[[int, int, float], None]
Mode = Literal["lcm", "guidance", "kd"]
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


def trained_rotation(pipe: Any) -> float | None:
    """The shape rotation limit (radians) the pipeline's teacher was trained with, from the
    ``train_log.json`` beside it (``max_rotation`` in degrees; absent: any angle), so students
    and pruned models learn on the teacher's own data."""
    import math

    log = Path(getattr(pipe, "name_or_path", "") or ".") / "train_log.json"
    try:
        degrees = json.loads(log.read_text()).get("max_rotation")
    except (OSError, ValueError, AttributeError):
        return None
    return None if degrees is None else math.radians(float(degrees))


def reference_latents(pipe: Any, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Scaled VAE latents and captions of reference-generator images (training split, drawn as
    the teacher's were: :func:`trained_rotation`); every other caption is a natural one
    (attributes left out, synonyms, other orders), as the teachers were trained on."""
    from genaccel.refdata.shapes import make_dataset

    images, specs = make_dataset(count, seed, split="train", max_rotation=trained_rotation(pipe))
    rng = np.random.default_rng([seed, 0xCA7])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    with torch.no_grad():
        latents = torch.cat([pipe.vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, count, 256)])
    return latents * pipe.vae.config.scaling_factor, [s.caption(rng) if i % 2 else s.caption()
                                                      for i, s in enumerate(specs)]


def teacher_latents(pipe: Any, prompts: list[str], seed: int, steps: int = 25, chunk: int = 16,
                    guidance: float = 7.5) -> torch.Tensor:
    """Final latents of the teacher's own samples for ``prompts`` (data for prompt-only distillation)."""
    out = []
    for i in range(0, len(prompts), chunk):
        part = prompts[i:i + chunk]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(part))]
        result = pipe(part, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="latent")
        out.append(result.images if hasattr(result, "images") else result.frames)  # video pipelines: frames
    return torch.cat(out)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` (B,) shaped to broadcast over ``like`` (B, ...): image or video latents."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class _UNetFamily:
    """SD-UNet teacher: the student takes the guidance scale as ``timestep_cond``."""

    guided = True

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher
        if teacher.unet.config.get("time_cond_proj_dim") is not None:
            raise InvalidRequest("teacher", type(teacher).__name__, "is already guidance-distilled",
                                 "distil from the original model")

    def denoiser(self) -> torch.nn.Module:
        return self.teacher.unet

    def make_student(self) -> torch.nn.Module:
        return make_student(self.teacher.unet)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        tok = self.teacher.tokenizer
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return self.teacher.text_encoder(ids)[0], None

    @staticmethod
    def call(model: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
             w_emb: torch.Tensor | None) -> torch.Tensor:
        return model(x, t, cond, timestep_cond=w_emb).sample

    def reference_data(self, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        return reference_latents(self.teacher, count, seed)

    def pipeline(self, denoiser: Any, scheduler: Any) -> Any:
        t = self.teacher
        return StableDiffusionPipeline(vae=t.vae, text_encoder=t.text_encoder, tokenizer=t.tokenizer, unet=denoiser,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       image_encoder=None, requires_safety_checker=False)


class _PixArtFamily:
    """PixArt transformer teacher: the student copies it and is distilled at one guidance scale."""

    guided = False
    max_length: int | None = None
    """Tokens the captions are padded to (None: the tokenizer's own maximum)."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher

    def denoiser(self) -> torch.nn.Module:
        return self.teacher.transformer

    def make_student(self) -> torch.nn.Module:
        student = copy.deepcopy(self.teacher.transformer).float()
        return student.requires_grad_(True)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        tok = self.teacher.tokenizer
        enc = tok(prompts, padding="max_length", max_length=self.max_length or tok.model_max_length, truncation=True,
                  add_special_tokens=True, return_tensors="pt")
        mask = enc.attention_mask
        return self.teacher.text_encoder(enc.input_ids, attention_mask=mask)[0], mask

    @staticmethod
    def call(model: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
             w_emb: torch.Tensor | None) -> torch.Tensor:
        out = model(x, encoder_hidden_states=cond, encoder_attention_mask=mask, timestep=t,
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        return out[:, : x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out  # learned sigma: keep eps

    def reference_data(self, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        return reference_latents(self.teacher, count, seed)

    def pipeline(self, denoiser: Any, scheduler: Any) -> Any:
        t = self.teacher
        return PixArtAlphaPipeline(tokenizer=t.tokenizer, text_encoder=t.text_encoder, vae=t.vae,
                                   transformer=denoiser, scheduler=scheduler)


class LatteFamily(_PixArtFamily):
    """Latte video teacher (``shapes-video``): as PixArt, distilled at one guidance scale (no
    guidance-scale input), on video latents ``(B, C, F, h, w)`` of moving-shape clips encoded frame
    by frame with the image VAE, as the teacher was trained (``genaccel.training.shapes_video``)."""

    max_length = MAX_TOKENS

    @staticmethod
    def call(model: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
             w_emb: torch.Tensor | None) -> torch.Tensor:
        bias = None if mask is None else caption_bias(mask, x.shape[2])  # what the pipeline's trimming amounts to
        out = model(x, timestep=t, encoder_hidden_states=cond, encoder_attention_mask=bias).sample
        return out[:, : x.shape[1]]  # Latte predicts (noise, variance): keep the noise

    def pipeline(self, denoiser: Any, scheduler: Any) -> Any:
        t = self.teacher
        return LattePipeline(tokenizer=t.tokenizer, text_encoder=t.text_encoder, vae=t.vae, transformer=denoiser,
                             scheduler=scheduler)

    def reference_data(self, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        """Scaled latents and captions of ``count`` moving-shape clips of the teacher's length,
        drawn as the teacher's were (:func:`trained_rotation`)."""
        from genaccel.refdata.moving_shapes import make_clips

        clips, specs = make_clips(count, int(self.teacher.transformer.config.video_length), seed,
                                  max_rotation=trained_rotation(self.teacher))
        return encode_clips(self.teacher.vae, clips), [s.caption() for s in specs]


@contextmanager
def block_outputs(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the hidden-state outputs of ``model``'s ``down_blocks.N`` / ``mid_block`` /
    ``up_blocks.N`` (a UNet; empty for other denoisers) while the context is open."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    blocks: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_children():
        if name in ("down_blocks", "up_blocks"):
            blocks += [(f"{name}.{i}", m) for i, m in enumerate(module.children())]
        elif name == "mid_block":
            blocks.append((name, module))
    for key, block in blocks:
        def keep(_: Any, __: Any, out: Any, key: str = key) -> None:
            found[key] = out[0] if isinstance(out, tuple) else out
        handles.append(block.register_forward_hook(keep))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def teacher_family(teacher: Any) -> _UNetFamily | _PixArtFamily | LatteFamily:
    """The distillation adapter for ``teacher``, or a refusal naming what is supported."""
    if getattr(teacher, "unet", None) is not None:
        return _UNetFamily(teacher)
    if isinstance(teacher, PixArtAlphaPipeline):
        return _PixArtFamily(teacher)
    if isinstance(teacher, LattePipeline):
        return LatteFamily(teacher)
    raise InvalidRequest("teacher", type(teacher).__name__, "genaccel distill trains students of SD-UNet, "
                         "PixArt and Latte pipelines (and of speech-ref) only in this version",
                         "pick a teacher such as shapes-sd, shapes-dit, shapes-video or speech-ref")


class Distiller:
    """One distillation run of ``teacher`` (a loaded SD-UNet or PixArt pipeline)."""

    def __init__(self, teacher: Any, config: DistillConfig, student: torch.nn.Module | None = None) -> None:
        if (student is None) == (config.mode == "kd"):
            raise ValueError("mode kd distils a given student; the other modes make their own")
        self.family = teacher_family(teacher)
        if config.mode == "guidance" and not self.family.guided:
            raise InvalidRequest("mode", config.mode, f"{type(teacher).__name__} has no guidance-scale input to "
                                 "distil into", "use --mode lcm (distilled at one guidance scale)")
        self.teacher, self.config = teacher, config
        for module in (self.family.denoiser(), teacher.text_encoder, teacher.vae):
            module.requires_grad_(False).eval()
        self.noise = DDPMScheduler.from_config(teacher.scheduler.config)
        self.lcm = LCMScheduler.from_config(teacher.scheduler.config)
        self.alphas = self.noise.alphas_cumprod.float()
        total = self.noise.config.num_train_timesteps
        self.skip = total // config.ddim_timesteps
        self.ddim = torch.from_numpy((np.arange(1, config.ddim_timesteps + 1) * self.skip).round().astype(np.int64) - 1)
        self.student = student.float().requires_grad_(True) if student is not None else self.family.make_student()
        self.target: torch.nn.Module | None = None
        if config.mode == "lcm":
            self.target = self.family.make_student().requires_grad_(False)
            self.target.load_state_dict(self.student.state_dict())

    def _embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.family.embed(prompts)

    def _x0(self, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = per_sample(self.alphas[t], x)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    def _boundary(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.lcm.get_scalings_for_boundary_condition_discrete(int(v)) for v in t]
        c_skip = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
        c_out = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
        return c_skip, c_out

    def _consistency(self, model: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                     mask: torch.Tensor | None, w_emb: torch.Tensor | None) -> torch.Tensor:
        eps = self.family.call(model, x, t, cond, mask, w_emb)
        c_skip, c_out = self._boundary(t)
        return per_sample(c_skip, x) * x + per_sample(c_out, x) * self._x0(eps, x, t)

    @torch.no_grad()
    def _teacher_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, uncond: Conditioning,
                     scale: torch.Tensor) -> torch.Tensor:
        masks = None if cond[1] is None or uncond[1] is None else torch.cat([uncond[1], cond[1]])
        eps = self.family.call(self.family.denoiser(), torch.cat([x, x]), torch.cat([t, t]),
                               torch.cat([uncond[0], cond[0]]), masks, None)
        eps_u, eps_c = eps.chunk(2)
        return eps_u + per_sample(scale, x) * (eps_c - eps_u)

    def loss(self, x0: torch.Tensor, cond: Conditioning, uncond: Conditioning, gen: torch.Generator) -> torch.Tensor:
        """One batch's loss; ``cond``/``uncond`` are (embeddings, attention mask or None) of equal size."""
        c = self.config
        b = x0.shape[0]
        scale = c.guidance_min + (c.guidance_max - c.guidance_min) * torch.rand(b, generator=gen)
        if not self.family.guided:
            scale = torch.full((b,), c.guidance_default)
        w_emb = guidance_embedding(scale) if self.family.guided and c.mode != "kd" else None
        noise = torch.randn(x0.shape, generator=gen)
        if c.mode == "kd":
            return self._kd_loss(x0, noise, cond, uncond, scale, gen)
        if c.mode == "guidance":
            t = torch.randint(0, self.noise.config.num_train_timesteps, (b,), generator=gen)
            x = self.noise.add_noise(x0, noise, t)
            pred = self.family.call(self.student, x, t, cond[0], cond[1], w_emb)
            return F.mse_loss(pred, self._teacher_eps(x, t, cond, uncond, scale))
        n = torch.randint(0, c.ddim_timesteps, (b,), generator=gen)
        t = self.ddim[n]
        t_prev = (t - self.skip).clamp(min=0)
        x = self.noise.add_noise(x0, noise, t)
        online = self._consistency(self.student, x, t, *cond, w_emb)
        with torch.no_grad():
            eps = self._teacher_eps(x, t, cond, uncond, scale)
            a_prev = per_sample(self.alphas[t_prev], x)
            x_prev = a_prev.sqrt() * self._x0(eps, x, t) + (1 - a_prev).sqrt() * eps  # DDIM step t -> t_prev
            assert self.target is not None
            target = self._consistency(self.target, x_prev, t_prev, *cond, w_emb)
        return (torch.sqrt((online - target) ** 2 + c.huber_c**2) - c.huber_c).mean()

    def _kd_loss(self, x0: torch.Tensor, noise: torch.Tensor, cond: Conditioning, uncond: Conditioning,
                 scale: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        t = torch.randint(0, self.noise.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        x = self.noise.add_noise(x0, noise, t)
        x2, t2 = torch.cat([x, x]), torch.cat([t, t])
        emb = torch.cat([uncond[0], cond[0]])
        mask = None if cond[1] is None or uncond[1] is None else torch.cat([uncond[1], cond[1]])
        with block_outputs(self.student) as student_feats:
            pred_u, pred_c = self.family.call(self.student, x2, t2, emb, mask, None).chunk(2)
        with torch.no_grad(), block_outputs(self.family.denoiser()) as teacher_feats:
            teach_u, teach_c = self.family.call(self.family.denoiser(), x2, t2, emb, mask, None).chunk(2)
        g = per_sample(scale, x)
        guided = F.mse_loss(pred_u + g * (pred_c - pred_u), teach_u + g * (teach_c - teach_u))
        output = F.mse_loss(pred_u, teach_u) + F.mse_loss(pred_c, teach_c)
        features = torch.zeros(())
        for key in sorted(student_feats.keys() & teacher_feats.keys()):  # relative MSE: blocks weigh alike
            target = teacher_feats[key]
            features = features + F.mse_loss(student_feats[key], target) / target.square().mean().clamp(min=1e-8)
        return output + guided + features + 0.1 * F.mse_loss(pred_c, noise)

    def train(self, latents: torch.Tensor, captions: list[str], ckpt: Path,
              progress: Progress | None = None) -> list[float]:
        c = self.config
        opt = torch.optim.AdamW(self.student.parameters(), lr=c.lr, weight_decay=0.0)
        start, losses = 0, []
        state = load_checkpoint(ckpt)
        if state is not None:
            self.student.load_state_dict(state["student"])
            if self.target is not None:
                self.target.load_state_dict(state["target"])
            opt.load_state_dict(state["opt"])
            start, losses = int(state["step"]), list(state["losses"])
        gen = torch.Generator().manual_seed(c.seed)
        if state is not None:
            gen.set_state(state["gen"])
        empty = self._embed([""])
        self.student.train()
        for step in range(start, c.steps):
            idx = torch.randint(len(latents), (c.batch,), generator=gen)
            cond = self._embed([captions[int(i)] for i in idx])
            mask = None if empty[1] is None or cond[1] is None else empty[1].expand_as(cond[1])
            uncond = (empty[0].expand_as(cond[0]), mask)
            loss = self.loss(latents[idx], cond, uncond, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
            opt.step()
            if self.target is not None:
                ema_update(self.target, self.student, c.ema_decay)
            losses.append(loss.item())
            if progress:
                progress(step + 1, c.steps, losses[-1])
            if (step + 1) % 100 == 0 or step + 1 == c.steps:
                target = self.target.state_dict() if self.target is not None else None
                save_checkpoint(ckpt, {"student": self.student.state_dict(), "target": target,
                                       "opt": opt.state_dict(), "step": step + 1, "losses": losses,
                                       "gen": gen.get_state()})
        self.student.eval()
        return losses

    def save(self, out: Path, teacher_name: str, losses: list[float]) -> None:
        lcm = self.config.mode == "lcm"
        denoiser = self.target if lcm else self.student  # LCM ships the EMA target, as in the paper
        pipe = self.family.pipeline(denoiser, self.lcm if lcm else self.teacher.scheduler)
        out.mkdir(parents=True, exist_ok=True)
        dtype = self.family.denoiser().dtype
        pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
        pipe.to(dtype)
        guided = self.family.guided
        card = {
            "distilled_from": teacher_name, "mode": self.config.mode,
            "defaults": {"steps": self.config.student_steps if lcm else None,
                         "guidance_scale": self.config.guidance_default if guided else 1.0},
            "guidance": "embedded: one denoiser pass per step; negative prompts are ignored" if guided else
            f"distilled at guidance_scale {self.config.guidance_default:g}: runs without classifier-free "
            "guidance (1); a larger guidance_scale applies CFG on top and negative prompts only then",
            "guidance_distilled": None if guided else self.config.guidance_default,
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
            latents, captions = distiller.family.reference_data(data, config.seed + 7)
        torch.save({"latents": latents, "captions": captions}, cache)
    losses = distiller.train(latents.float(), captions, work / "student.pt",
                             progress=progress(config.mode) if progress else None)
    distiller.save(out, teacher_name, losses)
    return losses
