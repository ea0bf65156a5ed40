"""Music adapter: text to music and sound on Stable Audio (``StableAudioPipeline``: DiT + Oobleck
autoencoder), AudioLDM 2 (``AudioLDM2Pipeline``: UNet on a mel VAE, HiFi-GAN vocoder) and on
genaccel's mel-space DiT (``MelDiTPipeline``, ``music-ref``).

A request names a duration (bounded per model), prompt, negative prompt, seed, steps, guidance
and number of outputs; each output is made with its own generator (seed, seed + 1, ...), so
``num_outputs`` never changes a clip. Pieces longer than the model's window are made of
overlapping windows (DiffRhythm-style full-length output): on the mel DiT each window continues
the previous one (its first frames are held to the previous window's last ones while sampling,
RePaint-style) and the mel frames are crossfaded before one Griffin-Lim pass; on Stable Audio the
windows are sampled apart and joined with equal-power crossfades (AudioLDM 2 alike). Progress
counts every step of every window. Optional loudness normalisation (BS.1770) and fades run on the
finished clip.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from genaccel.accel.base import call_wrappers
from genaccel.artifacts import check_audio_format
from genaccel.errors import InvalidRequest
from genaccel.settings import Settings
from genaccel.spec import JobRequest
from pipelines.audio_post import apply_fades, crossfade, normalise_loudness
from pipelines.modality import AudioOutput, Output, RunHooks, check_format, register_adapter

if TYPE_CHECKING:
    from pipelines.registry import ModelInfo

SERVED = ("StableAudioPipeline", "AudioLDM2Pipeline", "MelDiTPipeline")
AUDIOLDM2_WINDOW_S = 10.24  # AudioLDM 2's own default length
OVERLAP_S = 1.0


@dataclass(frozen=True)
class Window:
    start_s: float
    seconds: float


def plan_windows(duration: float, window: float, overlap: float = OVERLAP_S) -> list[Window]:
    """Windows of at most ``window`` seconds covering ``duration``, each overlapping the previous
    by ``overlap`` seconds (one window when the piece fits in one)."""
    if duration <= window + 1e-6:
        return [Window(0.0, duration)]
    overlap = min(overlap, window / 2)
    hop = window - overlap
    count = math.ceil((duration - overlap) / hop - 1e-9)
    out = []
    for i in range(count):
        start = i * hop
        out.append(Window(start, min(window, duration - start)))
    return out


def window_seconds(pipe: Any) -> float:
    """The longest clip the pipeline makes in one call."""
    if type(pipe).__name__ == "StableAudioPipeline":
        return float(pipe.transformer.config.sample_size * pipe.vae.hop_length / pipe.vae.config.sampling_rate)
    if type(pipe).__name__ == "AudioLDM2Pipeline":
        return AUDIOLDM2_WINDOW_S
    return float(getattr(pipe, "window_s", 4.0))


def sample_rate_of(pipe: Any) -> tuple[int, int]:
    """``(sample rate, channels)`` of a pipeline's output."""
    if type(pipe).__name__ == "StableAudioPipeline":
        return int(pipe.vae.config.sampling_rate), int(pipe.vae.config.audio_channels)
    if type(pipe).__name__ == "AudioLDM2Pipeline":
        return int(pipe.vocoder.config.sampling_rate), 1
    return int(pipe.sample_rate), 1


def _accepted(fn: Any) -> set[str]:
    return set(inspect.signature(fn).parameters)


class MusicAdapter:
    """Text to music / sound on Stable Audio and the mel DiT."""

    name: ClassVar[str] = "music"
    modality: ClassVar[str] = "music"
    formats: ClassVar[tuple[str, ...]] = ("wav", "flac", "mp3", "ogg")
    fields: ClassVar[tuple[str, ...]] = ("negative_prompt", "duration_s", "loudness_db", "fade_s")

    def prepare(self, request: JobRequest, info: ModelInfo, settings: Settings) -> dict[str, Any]:
        p, d = request.params, info.defaults
        duration = p.duration_s if p.duration_s is not None else (d.duration_s or 4.0)
        if d.max_duration_s is not None and duration > d.max_duration_s:
            raise InvalidRequest("duration_s", duration, f"{info.name} makes at most {d.max_duration_s:g} s "
                                 f"(windows of {d.duration_s or 4:g} s joined with crossfades)",
                                 f"pass --duration {d.max_duration_s:g} or less")
        if p.fade_s is not None and p.fade_s > duration / 2:
            raise InvalidRequest("fade_s", p.fade_s, f"must be at most half the clip ({duration / 2:g} s)",
                                 f"pass --fade {min(0.05, duration / 4):g}")
        fmt = check_format(request, self, d.output_format)
        check_audio_format(fmt, d.sample_rate or 16_000, d.channels or 1)
        return {"duration_s": duration, "output_format": fmt}

    def batch_key(self, request: JobRequest) -> tuple[Any, ...] | None:
        return None

    def generate(self, pipe: Any, requests: list[JobRequest], hooks: RunHooks) -> list[list[Output]]:
        return [self._request(pipe, r, hooks) for r in requests]

    def _request(self, pipe: Any, request: JobRequest, hooks: RunHooks) -> list[Output]:
        p = request.params
        assert p.seed is not None and p.steps is not None and p.duration_s is not None
        rate, _ = sample_rate_of(pipe)
        windows = plan_windows(p.duration_s, window_seconds(pipe))
        total = p.steps * len(windows) * p.num_outputs
        done = 0

        def step(_: int, __: int) -> None:
            nonlocal done
            done += 1
            hooks.on_step(min(done, total), total)

        outputs: list[Output] = []
        for i in range(p.num_outputs):
            seed = (p.seed + i) % 2**32
            if type(pipe).__name__ == "MelDiTPipeline":
                samples = self._mel_piece(pipe, request, windows, seed, step)
            else:
                samples = self._audio_piece(pipe, request, windows, seed, step)
            length = round(p.duration_s * rate)
            samples = samples[:length]
            if len(samples) < length:  # a vocoder's hop can fall short of the exact length by a few samples
                samples = np.pad(samples, ((0, length - len(samples)), (0, 0)))
            if p.loudness_db is not None:
                samples, _ = normalise_loudness(samples, rate, p.loudness_db)
            if p.fade_s:
                samples = apply_fades(samples, rate, p.fade_s)
            outputs.append(AudioOutput(np.ascontiguousarray(samples, dtype=np.float32), rate))
        return outputs

    def _call(self, pipe: Any, **kwargs: Any) -> Any:
        call = pipe.__call__
        for wrap in call_wrappers(pipe):  # techniques that change the call itself (MagCache's step count)
            call = wrap(call)
        return call(**kwargs)

    def _audio_piece(self, pipe: Any, request: JobRequest, windows: list[Window], seed: int,
                     step: Any) -> np.ndarray:
        """Stable Audio, AudioLDM 2: each window sampled with its own generator, joined by crossfades."""
        p = request.params
        rate, channels = sample_rate_of(pipe)
        accepted = _accepted(pipe.__call__)
        length_key = "audio_end_in_s" if "audio_end_in_s" in accepted else "audio_length_in_s"
        pieces = []
        for w, window in enumerate(windows):
            gen = torch.Generator("cpu").manual_seed((seed + 1_000_003 * w) % 2**32)
            kwargs: dict[str, Any] = {
                "prompt": request.prompt, "negative_prompt": request.negative_prompt or None,
                length_key: window.seconds, "num_inference_steps": p.steps, "guidance_scale": p.guidance_scale,
                "num_waveforms_per_prompt": 1, "generator": gen, "output_type": "np",
            }
            if "callback_on_step_end" in accepted:
                kwargs["callback_on_step_end"] = lambda _p, i, t, tensors: (step(i, 0), tensors)[1]
            else:
                kwargs.update(callback=lambda i, t, latents: step(i, 0), callback_steps=1)
            audio = np.asarray(self._call(pipe, **{k: v for k, v in kwargs.items() if k in accepted}).audios[0])
            audio = audio.reshape(channels, -1) if audio.ndim == 1 else audio  # AudioLDM 2: (n,)
            pieces.append(audio.T.astype(np.float32))  # (channels, n) -> (n, channels)
        return crossfade(pieces, round(min(OVERLAP_S, windows[0].seconds / 2) * rate))

    def _mel_piece(self, pipe: Any, request: JobRequest, windows: list[Window], seed: int, step: Any) -> np.ndarray:
        """Mel DiT: each window continues the previous one; one Griffin-Lim pass at the end."""
        p = request.params
        mels: list[torch.Tensor] = []
        overlap_frames = 0
        for w, window in enumerate(windows):
            gen = torch.Generator("cpu").manual_seed((seed + 1_000_003 * w) % 2**32)
            prefix = None
            if w:
                overlap_frames = pipe.aligned_frames(OVERLAP_S)
                prefix = mels[-1][..., -overlap_frames:]
            out = self._call(pipe, prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                             audio_length_in_s=window.seconds, num_inference_steps=p.steps,
                             guidance_scale=p.guidance_scale, generator=gen, output_type="latent", prefix_mels=prefix,
                             callback_on_step_end=lambda _p, i, t, tensors: (step(i, 0), tensors)[1])
            mels.append(out.mels)
        joined = mels[0]
        for mel in mels[1:]:
            n = min(overlap_frames, joined.shape[-1], mel.shape[-1])
            ramp = torch.linspace(0, 1, n)
            mixed = joined[..., -n:] * (1 - ramp) + mel[..., :n] * ramp
            joined = torch.cat([joined[..., :-n], mixed, mel[..., n:]], dim=-1)
        audio = pipe.codec.decode(joined).numpy()[0]
        return audio[:, None].astype(np.float32)

    def preview(self, pipe: Any, latents: Any, row: int) -> str | None:
        return None

    def serves(self, pipeline_class: str) -> bool:
        return pipeline_class in SERVED


register_adapter(MusicAdapter())
