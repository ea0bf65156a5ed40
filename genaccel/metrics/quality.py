"""Quality metrics: exact-match prompt accuracy, per-attribute accuracy, Fréchet distance, PSNR, SSIM.

Exact match (the headline): an output counts as right when *every* attribute its prompt names
is read back right; attributes the prompt leaves out are not scored, and a prompt that
:func:`~genaccel.refdata.shapes.parse_prompt` cannot read (an unknown colour, say) is not
scored but counted.  The micro average over attributes (the old ``prompt_accuracy``) hides a
model that ignores one word, so it is kept only as a secondary figure.

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

from genaccel.refdata.shapes import ATTRIBUTES, HELDOUT_COMBOS, parse_caption, parse_prompt

Reads = Sequence[dict[str, str]]


def _mean(values: Sequence[bool | int]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def pair_group(attributes: dict[str, str]) -> str | None:
    """"heldout" or "trained" for a prompt naming both shape and colour, else None."""
    if "shape" not in attributes or "colour" not in attributes:
        return None
    return "heldout" if (attributes["shape"], attributes["colour"]) in HELDOUT_COMBOS else "trained"


def score_reads(reads: Reads, prompts: Sequence[str], groups: Sequence[str | None] | None = None
                ) -> dict[str, Any]:
    """Score attribute reads (one dict per output) against the prompts that made them.

    Args:
        reads: attribute -> value per output (an evaluator's ``predict`` or a template read).
        prompts: the prompt of each output.
        groups: "trained"/"heldout" per output (the shape-colour pair the prompt was drawn
            from); by default from the pair the prompt names, if it names both.

    Returns:
        ``exact_match`` (over scored outputs), ``exact_match_{trained,heldout,full,partial}``
        (full: the prompt names all five attributes), ``attribute_accuracy`` (attribute ->
        accuracy over the outputs whose prompt names it) and ``attribute_accuracy_by_group``,
        ``attribute_accuracy_micro``, ``scored`` and ``unparsable`` (count) with up to five
        ``unparsable_examples``.  Figures with nothing to score are None.

    Example:
        >>> score_reads([{"shape": "star", "colour": "red"}], ["a red square"])["exact_match"]
        0.0
    """
    if len(reads) != len(prompts):
        raise ValueError(f"{len(reads)} reads but {len(prompts)} prompts")
    exact: dict[str, list[bool]] = {"all": [], "trained": [], "heldout": [], "full": [], "partial": []}
    per: dict[str, dict[str, list[bool]]] = {g: {a: [] for a in ATTRIBUTES} for g in ("all", "trained", "heldout")}
    unparsable: list[str] = []
    for i, (read, prompt) in enumerate(zip(reads, prompts, strict=True)):
        parsed = parse_prompt(prompt)
        if not parsed.ok:
            unparsable.append(prompt)
            continue
        group = groups[i] if groups is not None else pair_group(parsed.attributes)
        hits = {a: read.get(a) == v for a, v in parsed.attributes.items()}
        right = all(hits.values())
        exact["all"].append(right)
        exact["full" if len(hits) == len(ATTRIBUTES) else "partial"].append(right)
        for g in ("all", group):
            if g in per:
                for a, hit in hits.items():
                    per[g][a].append(hit)
        if group in exact:
            exact[group].append(right)
    micro = [h for a in ATTRIBUTES for h in per["all"][a]]
    return {
        "exact_match": _mean(exact["all"]),
        **{f"exact_match_{k}": _mean(exact[k]) for k in ("trained", "heldout", "full", "partial")},
        "attribute_accuracy": {a: _mean(per["all"][a]) for a in ATTRIBUTES},
        "attribute_accuracy_by_group": {g: {a: _mean(per[g][a]) for a in ATTRIBUTES} for g in ("trained", "heldout")},
        "attribute_accuracy_micro": _mean(micro),
        "scored": len(exact["all"]),
        "unparsable": len(unparsable),
        "unparsable_examples": unparsable[:5],
    }


def agreement(reads_a: Reads, reads_b: Reads, prompts: Sequence[str], examples: int = 5) -> dict[str, Any]:
    """Where two readers (the evaluator and the template check) agree on the same outputs.

    ``rate``: attribute -> fraction of outputs (with a readable prompt) where both read the same
    value; ``examples``: up to ``examples`` outputs where they differ on an attribute the prompt
    names, as {index, prompt, a, b}.
    """
    rate: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    found: list[dict[str, Any]] = []
    for i, (a, b, prompt) in enumerate(zip(reads_a, reads_b, prompts, strict=True)):
        parsed = parse_prompt(prompt)
        if not parsed.ok:
            continue
        for attr in ATTRIBUTES:
            rate[attr].append(a.get(attr) == b.get(attr))
        named = [attr for attr in parsed.attributes if a.get(attr) != b.get(attr)]
        if named and len(found) < examples:
            found.append({"index": i, "prompt": prompt, "a": {k: a.get(k) for k in named},
                          "b": {k: b.get(k) for k in named}})
    return {"rate": {k: _mean(v) for k, v in rate.items()}, "examples": found}


def exact_match(evaluator: Any, images: Any, prompts: Sequence[str]) -> float:
    """Fraction of outputs whose every attribute named in the prompt the evaluator reads back
    (unparsable prompts not scored); ``nan`` if none can be scored."""
    value = score_reads(evaluator.predict(images), prompts)["exact_match"]
    return float("nan") if value is None else value


def prompt_accuracy(evaluator: Any, images: Any, prompts: Sequence[str]) -> float:
    """The old figure, kept as ``attribute_accuracy_micro`` in the bench: fraction of attributes
    named in the prompts that the evaluator reads back.

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
