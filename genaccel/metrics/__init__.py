"""Evaluator classifier and image-quality metrics."""

from genaccel.metrics.evaluator import Evaluator, to_tensor
from genaccel.metrics.quality import (
    agreement,
    exact_match,
    frechet_distance,
    prompt_accuracy,
    psnr,
    score_reads,
    ssim,
)
from genaccel.metrics.template import read_template, read_templates

__all__ = [
    "Evaluator",
    "agreement",
    "exact_match",
    "frechet_distance",
    "prompt_accuracy",
    "psnr",
    "read_template",
    "read_templates",
    "score_reads",
    "ssim",
    "to_tensor",
]
