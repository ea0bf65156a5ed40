"""genaccel's own TTS, ``speech-ref``: a phoneme encoder with a duration predictor (FastSpeech 2),
a conditional-flow-matching mel decoder (Matcha-TTS / F5-TTS) on diffusers' ``StableAudioDiTModel``
and a Griffin-Lim vocoder.

* Encoder: IPA phoneme ids + voice -> hidden states ``(B, L, D)``; the duration predictor reads
  them with ``log(speed)`` and says how many mel frames each phoneme lasts (trained on espeak-ng's
  per-phoneme start times); the hidden states, repeated by duration, project to a coarse mel
  ``mu`` ``(B, 64, T)``.
* Decoder: ``StableAudioDiTModel(in_channels=128 = noisy mel + mu, out_channels=64)`` predicts
  the flow velocity ``v = x1 - x0`` at time ``t`` (x0 noise, x1 the mel); sampled with a few Euler
  steps on a sway-sampled schedule (F5-TTS, ``t + s (cos(pi t / 2) - 1 + t)``), optionally from a
  shallow start ``x_t0 = (1 - t0) noise + t0 mu`` (DiffSinger).
* Vocoder: Griffin-Lim on the 64-band log-mel (``genaccel.refdata.mel``).

Weights live in ``assets/speech-ref/`` (``config.json`` + ``model.safetensors``); the training
script is ``scripts/train_speech_ref.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genaccel.refdata import mel as melspec
from genaccel.refdata.speech import VOICES, espeak
from pipelines.speech_models import SpeechModel, StepFn

MEL_MEAN, MEL_STD = -5.0, 3.0
"""Log-mel normalisation: ``(log_mel - MEAN) / STD`` is roughly zero-mean, unit-variance."""


@dataclass
class SpeechRefConfig:
    phonemes: list[str] = field(default_factory=list)
    """Id 0 is padding; id i is ``phonemes[i - 1]``."""
    voices: list[str] = field(default_factory=lambda: list(VOICES))
    dim: int = 128
    encoder_layers: int = 3
    heads: int = 2
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 32
    default_steps: int = 8
    sway: float = -1.0
    shallow_t0: float = 0.0
    """Start time of the ODE (0: from noise; 0.3: DiffSinger's shallow start from the coarse mel)."""
    griffin_lim_iters: int = 32
    """Vocoder iterations (32: 90 ms per second of speech on one core; 8: 20 ms)."""
    sampler: str = "euler"
    """``euler`` (the flow ODE) or ``consistency`` (a student of ``genaccel distill``: each step
    jumps to the clean mel and re-noises to the next time, as consistency models sample)."""

    @classmethod
    def load(cls, path: Path) -> SpeechRefConfig:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


class PhonemeEncoder(nn.Module):
    """Phoneme ids ``(B, L)`` + voice ``(B,)`` -> hidden ``(B, L, D)``; ``durations`` -> log frames ``(B, L)``."""

    def __init__(self, cfg: SpeechRefConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.embed = nn.Embedding(len(cfg.phonemes) + 1, d, padding_idx=0)
        self.voice = nn.Embedding(len(cfg.voices), d)
        self.pos = nn.Parameter(torch.zeros(1, 64, d))
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, dropout=0.1, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.encoder_layers, enable_nested_tensor=False)
        self.duration = nn.Sequential(nn.Linear(d + 1, d), nn.GELU(), nn.Linear(d, 1))
        self.coarse = nn.Linear(d, melspec.N_MELS)

    def forward(self, ids: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        pad = ids == 0
        x = self.embed(ids) + self.voice(voice)[:, None] + self.pos[:, : ids.shape[1]]
        return self.layers(x, src_key_padding_mask=pad)  # (B, L, D)

    def durations(self, hidden: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
        """Predicted ``log(1 + frames)`` per phoneme, ``(B, L)``."""
        s = torch.log(speed)[:, None, None].expand(*hidden.shape[:2], 1)
        return self.duration(torch.cat([hidden.detach(), s], -1))[..., 0]


def regulate(hidden: torch.Tensor, frames: torch.Tensor, length: int) -> torch.Tensor:
    """Repeat each phoneme's state by its frame count: ``(B, L, D)`` -> ``(B, length, D)`` (zero-padded)."""
    out = hidden.new_zeros(hidden.shape[0], length, hidden.shape[2])
    for b in range(hidden.shape[0]):
        rep = torch.repeat_interleave(hidden[b], frames[b].clamp(min=0), dim=0)[:length]
        out[b, : rep.shape[0]] = rep
    return out


def build_decoder(cfg: SpeechRefConfig) -> Any:
    from diffusers import StableAudioDiTModel

    from genaccel.accel.audio_blocks import register_audio_blocks

    register_audio_blocks()  # for the first-block cache and MagCache
    return StableAudioDiTModel(
        sample_size=256, in_channels=2 * melspec.N_MELS, out_channels=melspec.N_MELS, num_layers=cfg.dit_layers,
        attention_head_dim=cfg.dit_head_dim, num_attention_heads=cfg.dit_heads,
        num_key_value_attention_heads=cfg.dit_heads // 2, cross_attention_dim=cfg.dim, time_proj_dim=64,
        global_states_input_dim=cfg.dim, cross_attention_input_dim=cfg.dim,
    )


def rotary(cfg: SpeechRefConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding of the decoder's ``length + 1`` tokens (as Stable Audio builds it)."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    cos, sin = get_1d_rotary_pos_embed(cfg.dit_head_dim // 2, length + 1, use_real=True, repeat_interleave_real=False)
    return cos, sin


def sway_schedule(steps: int, sway: float, t0: float = 0.0) -> torch.Tensor:
    """``steps + 1`` times from ``t0`` to 1, sway-sampled (F5-TTS): ``s < 0`` spends more steps near noise."""
    u = torch.linspace(0, 1, steps + 1)
    t = u + sway * (torch.cos(math.pi / 2 * u) - 1 + u)
    return t0 + (1 - t0) * t


class FlowScheduler:
    """Euler on a sway-sampled schedule (named so job metadata can say which sampler ran)."""

    def __init__(self, sway: float = -1.0) -> None:
        self.sway = sway
        self.timesteps: torch.Tensor = torch.zeros(0)


class ConsistencyFlowScheduler(FlowScheduler):
    """Multistep consistency sampling of a distilled student (the class name goes in job metadata)."""


class SpeechRefModel(SpeechModel):
    """The loaded ``speech-ref`` (or a random ``tiny-speech-ref``)."""

    iterative = True
    sample_rate = melspec.SAMPLE_RATE

    def __init__(self, cfg: SpeechRefConfig, encoder: PhonemeEncoder, transformer: Any) -> None:
        super().__init__()
        self.cfg, self.encoder, self.transformer = cfg, encoder.eval(), transformer.eval()
        self.voices = tuple(cfg.voices)
        self.ids = {p: i + 1 for i, p in enumerate(cfg.phonemes)}
        if cfg.sampler not in ("euler", "consistency"):
            raise ValueError(f"sampler={cfg.sampler!r}: must be euler or consistency")
        self.scheduler = ConsistencyFlowScheduler(cfg.sway) if cfg.sampler == "consistency" else FlowScheduler(cfg.sway)
        self.shallow_t0 = cfg.shallow_t0
        self.griffin_lim_iters = cfg.griffin_lim_iters

    @classmethod
    def load(cls, folder: Path) -> SpeechRefModel:
        from safetensors.torch import load_file

        cfg = SpeechRefConfig.load(folder / "config.json")
        model = cls(cfg, PhonemeEncoder(cfg), build_decoder(cfg))
        state = load_file(folder / "model.safetensors")
        model.encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        model.transformer.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("transformer.")})
        return model

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.cfg.save(folder / "config.json")
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state |= {f"transformer.{k}": v for k, v in self.transformer.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")

    def symbols(self, text: str, voice: str) -> list[str]:
        """espeak-ng's phonemes of ``text`` in ``voice`` (the same events the training data used)."""
        return list(espeak().synth(text, voice if voice in VOICES else self.voices[0]).phonemes)

    def check_phonemes(self, text: str, voice: str) -> tuple[str, int] | None:
        for i, p in enumerate(self.symbols(text, voice)):
            if p not in self.ids:
                return p, i
        return None

    @torch.no_grad()
    def condition(self, text: str, voice: str, speed: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu (1, 64, T), voice state (1, 1, D))``: the coarse mel and the decoder's voice condition."""
        ids = torch.tensor([[self.ids.get(p, 0) for p in self.symbols(text, voice)] or [0]])
        v = torch.tensor([self.voices.index(voice)])
        hidden = self.encoder(ids, v)
        logd = self.encoder.durations(hidden, torch.tensor([speed], dtype=torch.float32))
        frames = torch.clamp(torch.round(torch.expm1(logd)), min=1).long()
        length = int(frames.sum())
        aligned = regulate(hidden, frames, length)
        mu = self.encoder.coarse(aligned).transpose(1, 2)  # (1, 64, T)
        return mu, self.encoder.voice(v)[:, None]

    @torch.no_grad()
    def sample_mel(self, mu: torch.Tensor, voice_state: torch.Tensor, steps: int, generator: torch.Generator,
                   on_step: StepFn) -> torch.Tensor:
        """Integrate the flow from noise (or the shallow start) to a normalised mel ``(1, 64, T)``:
        Euler steps, or for a consistency student a jump to the clean mel per step, re-noised to the
        next time with fresh noise from ``generator``."""
        times = sway_schedule(steps, self.scheduler.sway, self.shallow_t0)
        self.scheduler.timesteps = times[:-1]
        consistency = self.cfg.sampler == "consistency"
        noise = torch.randn(mu.shape, generator=generator)
        x = (1 - times[0]) * noise + times[0] * mu
        rope = rotary(self.cfg, mu.shape[-1])
        for i in range(steps):  # the DiT caches (genaccel.accel.dit_cache) set their context around each call
            v = self.velocity(x, mu, times[i], voice_state, rope)
            if consistency:
                x = x + (1 - times[i]) * v  # the student's clean mel
                if i + 1 < steps:
                    x = (1 - times[i + 1]) * torch.randn(mu.shape, generator=generator) + times[i + 1] * x
            else:
                x = x + (times[i + 1] - times[i]) * v
            on_step(i + 1, steps)
        return x

    def velocity(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, voice_state: torch.Tensor,
                 rope: tuple[torch.Tensor, torch.Tensor], transformer: Any = None) -> torch.Tensor:
        """The decoder's flow velocity at ``x`` and time ``t`` (a scalar or one per batch row)."""
        dit = transformer if transformer is not None else self.transformer
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return dit(hidden_states=torch.cat([x, mu], 1), timestep=t, encoder_hidden_states=voice_state,
                   global_hidden_states=voice_state, rotary_embedding=rope, return_dict=False)[0]

    def vocode(self, mel: torch.Tensor) -> np.ndarray:
        return melspec.griffin_lim(mel[0] * MEL_STD + MEL_MEAN, iters=self.griffin_lim_iters).numpy()

    def synthesize(self, text: str, voice: str, speed: float, steps: int, generator: torch.Generator,
                   on_step: StepFn) -> np.ndarray:
        mu, state = self.condition(text, voice, speed)
        mel = self.sample_mel(mu, state, steps, generator, on_step)
        wav = self.vocode(mel)
        return wav / max(1.0, float(np.abs(wav).max()) / 0.95)


def corpus_phonemes() -> list[str]:
    """Every phoneme espeak-ng uses for the corpus in the corpus voices (the model's inventory)."""
    from genaccel.refdata.speech import COLOURS, NUMBERS, SLOTS

    found: set[str] = set()
    engine = espeak()
    words = " ".join(w for slot in SLOTS for w in slot)
    for voice in VOICES:
        for chunk in (words, " ".join(COLOURS + NUMBERS)):
            found |= set(engine.synth(chunk, voice).phonemes)
    return sorted(found)


def build_tiny_speech_ref(seed: int = 0) -> SpeechRefModel:
    """Random weights, tiny sizes: the ``speech-ref`` code path for tests."""
    cfg = SpeechRefConfig(phonemes=corpus_phonemes(), dim=32, encoder_layers=1, heads=2, dit_layers=2, dit_heads=2,
                          dit_head_dim=16, default_steps=2, griffin_lim_iters=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpeechRefModel(cfg, PhonemeEncoder(cfg), build_decoder(cfg))
