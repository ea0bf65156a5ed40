"""``genaccel distill`` for Latte video teachers (``shapes-video``): the distillation adapter that
``genaccel.training.distill.Distiller`` drives, and the training clips.

Latte has no guidance-scale input, so, as for PixArt, the LCM student is distilled at the
teacher's default guidance scale and runs without classifier-free guidance. Latents are video
latents ``(B, C, F, h, w)``: the image VAE frame by frame, as the teacher was trained
(``genaccel.training.shapes_video.encode_clips``); the captions are the moving-shape captions.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from diffusers import LattePipeline

from genaccel.training.shapes_video import MAX_TOKENS, caption_bias, encode_clips


class LatteFamily:
    """Latte transformer teacher: the student copies it and is distilled at one guidance scale."""

    guided = False

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher

    def denoiser(self) -> torch.nn.Module:
        return self.teacher.transformer  # type: ignore[no-any-return]

    def make_student(self) -> torch.nn.Module:
        student = copy.deepcopy(self.teacher.transformer).float()
        return student.requires_grad_(True)  # type: ignore[no-any-return]

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        enc = self.teacher.tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                     add_special_tokens=True, return_tensors="pt")
        mask = enc.attention_mask
        return self.teacher.text_encoder(enc.input_ids, attention_mask=mask)[0], mask

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
        """Scaled latents and captions of ``count`` moving-shape clips of the teacher's length."""
        from genaccel.refdata.moving_shapes import make_clips

        clips, specs = make_clips(count, int(self.teacher.transformer.config.video_length), seed)
        return encode_clips(self.teacher.vae, clips), [s.caption() for s in specs]


def is_latte(pipe: Any) -> bool:
    return isinstance(pipe, LattePipeline)
