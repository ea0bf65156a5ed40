"""Evaluator classifier and image-quality metrics."""

from genaccel.metrics.evaluator import Evaluator, to_tensor
from genaccel.metrics.quality import frechet_distance, prompt_accuracy, psnr, ssim

__all__ = [
    "Evaluator",
    "frechet_distance",
    "prompt_accuracy",
    "psnr",
    "ssim",
    "to_tensor",
]
