"""Quality metrics: prompt accuracy, Fréchet distance, PSNR and SSIM.

Image conventions for :func:`psnr` / :func:`ssim`: numpy arrays (or PIL
images / CPU tensors, converted with ``np.asarray``) laid out (H, W, C) or
(N, H, W, C).  uint8 inputs are scaled by 1/255; float inputs must already be
in [0, 1].  Both inputs are converted the same way, so data range L = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genaccel.refdata.shapes import parse_caption


def prompt_accuracy(evaluator: Any, images: Any, prompts: Sequence[str]) -> float:
    """Fraction of attributes named in the prompts that the evaluator reads back.

    Each prompt is parsed with :func:`parse_caption`; every named attribute
    counts once (micro average over all named attributes of all images).
    Returns ``nan`` if no prompt names any attribute.
    """
    preds = evaluator.predict(images)
    if len(preds) != len(prompts):
        raise ValueError(f"{len(preds)} images but {len(prompts)} prompts")
    hits = total = 0
    for pred, prompt in zip(preds, prompts, strict=False):
        for attr, value in parse_caption(prompt).items():
            total += 1
            hits += int(pred.get(attr) == value)
    return hits / total if total else float("nan")


def _sqrtm_psd(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, where
    ``tr((S_a S_b)^{1/2})`` is computed stably as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix ``S_a^{1/2} S_b S_a^{1/2}``
    (numpy only, no scipy).  Clipped at 0.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"expected (N, D) arrays with equal D, got {a.shape} and {b.shape}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrtm_psd(cov_a)
    mid = root_a @ cov_b @ root_a
    tr_covmean = np.sqrt(
        np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0.0, None)
    ).sum()
    dist = (
        ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_covmean
    )
    return float(max(dist, 0.0))


def _as_float(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64)


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_float(a), _as_float(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    if x.ndim == 2:  # single grey image
        x, y = x[..., None], y[..., None]
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected (H,W,C) or (N,H,W,C), got {x.shape}")
    return x, y


def psnr(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio in dB (data range 1), mean over images.

    Identical images give ``math.inf`` (no cap); a batch containing an
    identical pair therefore also averages to ``inf``.
    """
    x, y = _pair(a, b)
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
    vals = [math.inf if m == 0 else -10.0 * math.log10(m) for m in mse]
    return float(np.mean(vals))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: Any, b: Any, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004), mean over pixels, channels, images.

    Gaussian window (11x11, sigma 1.5; shrunk to the image side if smaller),
    constants C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with L = 1, per channel,
    'valid' filtering (no padding).  Identical images give exactly 1.0.
    """
    x, y = _pair(a, b)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    yt = torch.from_numpy(y).permute(0, 3, 1, 2)
    _, c, h, w = xt.shape
    size = min(window, h, w)
    size -= 1 - size % 2  # keep it odd
    g = _gaussian_window(size, sigma)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(xt), blur(yt)
    sxx = blur(xt * xt) - mu_x**2
    syy = blur(yt * yt) - mu_y**2
    sxy = blur(xt * yt) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float((num / den).mean())
