"""The one log-mel spectrogram the speech model, its vocoder and the speech evaluator share
(22,050 Hz, 1024-point FFT, hop 256 = 11.6 ms, 64 mel bands up to 8 kHz), and Griffin-Lim back
to a waveform. The filterbank and Griffin-Lim come from librosa; the STFTs run in torch so a
batch of mels inverts in one call."""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 22050
N_FFT = 1024
HOP = 256
N_MELS = 64
FMAX = 8000.0
LOG_FLOOR = 1e-5
FRAMES_PER_S = SAMPLE_RATE / HOP


@functools.cache
def mel_basis() -> torch.Tensor:
    """``(N_MELS, N_FFT // 2 + 1)`` Slaney mel filterbank."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmax=FMAX)).float()


@functools.cache
def _inverse_basis() -> torch.Tensor:
    return torch.linalg.pinv(mel_basis())


def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT)


def log_mel(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(n,)`` or ``(B, n)`` waveform -> ``(N_MELS, T)`` or ``(B, N_MELS, T)`` natural-log mel."""
    wav = torch.as_tensor(samples, dtype=torch.float32)
    spec = torch.stft(wav, N_FFT, HOP, window=_window(), return_complex=True).abs()
    return torch.log(torch.clamp(mel_basis() @ spec, min=LOG_FLOOR))


def griffin_lim(mel: torch.Tensor, iters: int = 32, momentum: float = 0.99) -> torch.Tensor:
    """``(N_MELS, T)`` or ``(B, N_MELS, T)`` log-mel -> waveform (fast Griffin-Lim, Perraudin 2013),
    starting from a fixed phase so the same mel always gives the same audio."""
    mag = torch.clamp(_inverse_basis() @ torch.exp(mel.float()), min=0.0)  # (..., F, T)
    angles = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=torch.Generator().manual_seed(0)))
    prev = torch.zeros_like(angles)
    wav = torch.istft(mag * angles, N_FFT, HOP, window=_window())
    for _ in range(iters):
        rebuilt = torch.stft(wav, N_FFT, HOP, window=_window(), return_complex=True)
        rebuilt = rebuilt[..., : mag.shape[-1]]
        tprev = rebuilt
        rebuilt = rebuilt - (momentum / (1 + momentum)) * prev
        angles = rebuilt / torch.clamp(rebuilt.abs(), min=1e-8)
        prev = tprev
        wav = torch.istft(mag * angles, N_FFT, HOP, window=_window())
    return wav
