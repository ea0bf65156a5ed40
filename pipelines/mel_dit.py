"""``MelDiTPipeline``: Stable Audio's transformer (``StableAudioDiTModel``) on normalised log-mel
frames, a small T5 text encoder with an in-memory word tokenizer, EDM preconditioning sampled by
``EDMDPMSolverMultistepScheduler``, and the Griffin-Lim mel codec (``pipelines.mel_codec``) in
place of the waveform autoencoder.

Why our own pipeline class instead of ``StableAudioPipeline``: that pipeline requires an Oobleck
waveform VAE and a T5 projection model with seconds conditioning; a waveform VAE cannot be
trained on this machine (26-42 s per step), and the mel frames need no projection. The
transformer, the scheduler and their timestep convention (EDM's ``0.25 * log(sigma)``, about 1.1
down to -1.55) are the same as Stable Audio's, so the audio-DiT caches treat both alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, EDMDPMSolverMultistepScheduler, StableAudioDiTModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from transformers import T5EncoderModel

from pipelines.mel_codec import MelCodec, MelCodecConfig


@dataclass(frozen=True)
class MelDiTConfig:
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    text_dim: int = 64
    text_layers: int = 2
    max_tokens: int = 20
    n_mels: int = 64
    #: frames stacked into one token (channels n_mels * patch): halves the sequence per factor 2
    patch: int = 4


def build_transformer(cfg: MelDiTConfig) -> StableAudioDiTModel:
    inner = cfg.heads * cfg.head_dim
    return StableAudioDiTModel(
        sample_size=256, in_channels=cfg.n_mels * cfg.patch, out_channels=cfg.n_mels * cfg.patch,
        num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads, num_key_value_attention_heads=cfg.kv_heads,
        cross_attention_dim=inner, time_proj_dim=64, global_states_input_dim=cfg.text_dim,
        cross_attention_input_dim=cfg.text_dim,
    )


def edm_scheduler() -> EDMDPMSolverMultistepScheduler:
    """EDM DPM-Solver++ (2nd order, Karras sigmas): needs no torchsde, unlike Stable Audio's
    default ``CosineDPMSolverMultistepScheduler``."""
    return EDMDPMSolverMultistepScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, solver_order=2,
                                          prediction_type="epsilon", final_sigmas_type="zero")


def pack(mel: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, n_mels, frames) -> (B, n_mels * patch, frames // patch): ``patch`` frames per token."""
    b, m, f = mel.shape
    return mel.reshape(b, m, f // patch, patch).permute(0, 1, 3, 2).reshape(b, m * patch, f // patch)


def unpack(tokens: torch.Tensor, patch: int) -> torch.Tensor:
    b, c, n = tokens.shape
    return tokens.reshape(b, c // patch, patch, n).permute(0, 1, 3, 2).reshape(b, c // patch, n * patch)


def text_states(text_encoder: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per-token states (B, L, D), pooled (B, 1, D))``: cross-attention and the global token."""
    mask = (tokens != 0).long()  # <pad> is id 0
    states = text_encoder(tokens, attention_mask=mask)[0]
    weights = mask[..., None].float()
    pooled = (states * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1.0)
    return states, pooled


def rotary(transformer: StableAudioDiTModel, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return get_1d_rotary_pos_embed(transformer.config.attention_head_dim // 2, frames + 1, use_real=True,
                                   repeat_interleave_real=False)


def dit_output(transformer: StableAudioDiTModel, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor,
               pooled: torch.Tensor) -> torch.Tensor:
    """The raw network output F (EDM): denoised = c_skip * x + c_out * F."""
    return transformer(x, t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t, encoder_hidden_states=states,
                       global_hidden_states=pooled, rotary_embedding=rotary(transformer, x.shape[-1]),
                       return_dict=False)[0]


@dataclass
class MelDiTOutput:
    audios: np.ndarray  # (B, channels=1, samples) float32
    mels: torch.Tensor  # (B, n_mels, frames), normalised


class MelDiTPipeline(DiffusionPipeline):  # type: ignore[misc]
    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(self, tokenizer: Any, text_encoder: T5EncoderModel, transformer: StableAudioDiTModel,
                 scheduler: EDMDPMSolverMultistepScheduler) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                              scheduler=scheduler)
        self.codec = MelCodec()

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> MelDiTPipeline:  # type: ignore[override]
        pipe = super().from_pretrained(path, **kwargs)
        if (Path(path) / "mel_codec.json").is_file():
            pipe.codec = MelCodec.load(Path(path))
        return pipe  # type: ignore[no-any-return]

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:  # type: ignore[override]
        super().save_pretrained(path, **kwargs)
        self.codec.save(Path(path))

    window_s: float = 4.0
    """Clip length the model was trained on: longer pieces are made of windows."""

    def aligned_frames(self, seconds: float) -> int:
        """Mel frames for ``seconds``, rounded up to whole tokens."""
        return -(-self.codec.frames_for(seconds) // self.patch) * self.patch

    @property
    def patch(self) -> int:
        return int(self.transformer.config.in_channels // self.codec.config.n_mels)

    @property
    def sample_rate(self) -> int:
        return self.codec.config.sample_rate

    def set_codec(self, config: MelCodecConfig) -> None:
        self.codec = MelCodec(config)

    @property
    def is_consistency_student(self) -> bool:
        """Sampled by ``CMStochasticIterativeScheduler``: a consistency student (``genaccel distill``)."""
        return type(self.scheduler).__name__ == "CMStochasticIterativeScheduler"

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The DiT's time input, EDM's ``0.25 ln sigma``, for scheduler timestep ``t``: the EDM
        schedulers' timesteps are that already; a consistency student's scheduler scales it by 1000."""
        return t / 1000.0 if self.is_consistency_student else t

    def tokens(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer([p.lower() for p in prompts], padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return text_states(self.text_encoder, self.tokens(prompts).to(self.device))

    @torch.no_grad()
    def __call__(
        self, prompt: str | list[str], negative_prompt: str | list[str] | None = None, audio_length_in_s: float = 4.0,
        num_inference_steps: int = 25, guidance_scale: float = 3.0, num_waveforms_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
        output_type: str = "np", callback_on_step_end: Callable[..., Any] | None = None,
        griffin_lim_iters: int | None = None, prefix_mels: torch.Tensor | None = None, **_: Any,
    ) -> MelDiTOutput:
        """Sample mel frames for ``audio_length_in_s`` seconds and decode them (``output_type="np"``)
        or return them alone (``"latent"``). ``prefix_mels`` (1, n_mels, k), k a multiple of the patch:
        the clip's first k frames are held to these while sampling (continuing a previous window)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_waveforms_per_prompt)]
        batch = len(prompts)
        patch = self.patch
        frames = self.aligned_frames(audio_length_in_s)
        samples = round(audio_length_in_s * self.sample_rate)
        dtype = self.transformer.dtype
        states, pooled = self.encode_prompt(prompts)
        cfg = guidance_scale > 1.0
        if cfg:
            negatives = negative_prompt if negative_prompt is not None else ""
            negatives = [negatives] * batch if isinstance(negatives, str) else \
                [n for n in negatives for _ in range(num_waveforms_per_prompt)]
            n_states, n_pooled = self.encode_prompt(negatives)
            states, pooled = torch.cat([n_states, states]), torch.cat([n_pooled, pooled])
        states, pooled = states.to(dtype), pooled.to(dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        if latents is None:
            shape = (batch, self.transformer.config.in_channels, frames // patch)
            if isinstance(generator, list):
                latents = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
            else:
                latents = torch.randn(shape, generator=generator)
        x = latents.to(self.device, torch.float32) * self.scheduler.init_noise_sigma
        known, held = None, 0
        if prefix_mels is not None:
            known = pack(prefix_mels.to(self.device, torch.float32), patch).expand(batch, -1, -1)
            held = known.shape[-1]
            known_noise = torch.randn(known.shape, generator=generator if isinstance(generator, torch.Generator)
                                      else None).to(self.device)
            x[..., :held] = known + self.scheduler.sigmas[0] * known_noise
        # a stochastic sampler (the consistency student's) draws its noise from the request's generator
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters \
            else {}
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(timesteps):
            model_in = self.scheduler.scale_model_input(torch.cat([x, x]) if cfg else x, t)
            out = dit_output(self.transformer, model_in.to(dtype), self.model_time(t).to(self.device), states,
                             pooled).float()
            if cfg:
                uncond, cond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            x = self.scheduler.step(out, t, x, **step_kwargs).prev_sample
            if known is not None:
                x[..., :held] = known + self.scheduler.sigmas[i + 1] * known_noise
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, t, {"latents": x})
        mels = unpack(x.cpu(), patch)
        if output_type == "latent":
            return MelDiTOutput(audios=np.zeros((batch, 1, 0), np.float32), mels=mels)
        audio = self.codec.decode(mels, iters=griffin_lim_iters).numpy()[:, :samples]
        return MelDiTOutput(audios=audio[:, None, :].astype(np.float32), mels=mels)


def build_mel_dit(cfg: MelDiTConfig, words: list[str], seed: int = 0,
                  codec: MelCodecConfig | None = None) -> MelDiTPipeline:
    """A fresh (untrained) pipeline: seeded weights, the word tokenizer over ``words``."""
    from transformers import T5Config

    from pipelines.tokenizers import word_t5_tokenizer

    torch.manual_seed(seed)
    tokenizer = word_t5_tokenizer(words, max_length=cfg.max_tokens)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=cfg.text_dim, d_ff=cfg.text_dim * 4, d_kv=16, num_heads=4,
        num_layers=cfg.text_layers, dropout_rate=0.0,
    ))
    pipe = MelDiTPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=build_transformer(cfg),
                          scheduler=edm_scheduler())
    if codec is not None:
        pipe.set_codec(codec)
    pipe.set_progress_bar_config(disable=True)
    return pipe
