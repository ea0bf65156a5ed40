"""``CaptionLatteTransformer3DModel``: diffusers' Latte transformer with the caption also fed into
the timestep modulation that every block reads (a pooled caption vector, as SDXL's and Stable
Audio's global conditioning), not only through the spatial blocks' cross-attention.

Why: Latte's temporal blocks, the only ones that see frame order, get no caption: diffusers calls
them with ``encoder_hidden_states=None``. The caption reaches them only through what the spatial
cross-attention wrote into each frame, and there "left", "right", "top" and "bottom" are the image
model's position words. Measured on the session-12 ``shapes-video`` run (a direction-tuned text
encoder, 3,633 steps): the denoiser's output changed 0.6 % between opposite directions at t=950
against 9 % for another colour, and direction accuracy stayed at 0.42. Here the masked mean of
the caption's token states goes through a small MLP (its last layer zero-initialised, so a model
made from the image DiT starts out unchanged) and is added to the adaLN-single output
``timestep`` (B, 6 * inner) that modulates every spatial and temporal block.

Written as a subclass with a forward hook on ``adaln_single`` (diffusers has no hook point for a
pooled caption in Latte); the parent's forward runs unchanged. A saved pipeline names this class
as ``["pipelines.caption_latte", "CaptionLatteTransformer3DModel"]`` in ``model_index.json``;
diffusers resolves that module from ``sys.modules`` only, so ``pipelines.loader`` imports it
before loading (and this module exposes ``ModelMixin``, which diffusers looks up beside the class
to pick the load method).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import LatteTransformer3DModel, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["CaptionLatteTransformer3DModel", "ModelMixin", "with_caption_modulation"]


class CaptionLatteTransformer3DModel(LatteTransformer3DModel):  # type: ignore[misc]
    """Latte with a pooled-caption term in the timestep modulation (see the module docstring)."""

    @register_to_config
    def __init__(self, num_attention_heads: int = 16, attention_head_dim: int = 88, in_channels: int | None = None,
                 out_channels: int | None = None, num_layers: int = 1, dropout: float = 0.0,
                 cross_attention_dim: int | None = None, attention_bias: bool = False, sample_size: int = 64,
                 patch_size: int | None = None, activation_fn: str = "geglu", num_embeds_ada_norm: int | None = None,
                 norm_type: str = "layer_norm", norm_elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 caption_channels: int | None = None, video_length: int = 16,
                 caption_in_modulation: bool = True) -> None:
        super().__init__(num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
                         in_channels=in_channels, out_channels=out_channels, num_layers=num_layers, dropout=dropout,
                         cross_attention_dim=cross_attention_dim, attention_bias=attention_bias,
                         sample_size=sample_size, patch_size=patch_size, activation_fn=activation_fn,
                         num_embeds_ada_norm=num_embeds_ada_norm, norm_type=norm_type,
                         norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps,
                         caption_channels=caption_channels, video_length=video_length)
        if norm_type != "ada_norm_single" or caption_channels is None:
            raise ValueError("CaptionLatteTransformer3DModel needs norm_type='ada_norm_single' and caption_channels")
        inner = num_attention_heads * attention_head_dim
        last = nn.Linear(inner, 6 * inner)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.caption_mlp = nn.Sequential(nn.Linear(caption_channels, inner), nn.SiLU(), last)
        self._caption_shift: torch.Tensor | None = None
        self.adaln_single.register_forward_hook(self._add_caption_shift)

    def _add_caption_shift(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self._caption_shift is None:
            return output
        timestep, embedded = output
        return timestep + self._caption_shift.to(timestep.dtype), embedded

    def pooled_caption(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the caption's token states (B, L, D) over the tokens ``mask`` (B, L) keeps. When
        None: over the tokens whose states are not all zero, which is what LattePipeline hands over
        (one prompt: trimmed to its tokens; several: padding zeroed)."""
        if mask is None:
            mask = states.abs().amax(dim=-1) > 0
        weights = mask.to(states.dtype)[..., None]
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                enable_temporal_attentions: bool = True, return_dict: bool = True,
                pooling_mask: torch.Tensor | None = None) -> Any:
        """Latte's forward; ``pooling_mask`` (B, L): the tokens the pooled caption averages
        (training passes the captions' token masks; the pipeline passes none)."""
        if encoder_hidden_states is not None:
            pooled = self.pooled_caption(encoder_hidden_states, pooling_mask)
            self._caption_shift = self.caption_mlp(pooled.to(param_dtype(self.caption_mlp)))
        try:
            return super().forward(hidden_states, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                                   encoder_attention_mask=encoder_attention_mask,
                                   enable_temporal_attentions=enable_temporal_attentions, return_dict=return_dict)
        finally:
            self._caption_shift = None


def param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def with_caption_modulation(latte: LatteTransformer3DModel) -> CaptionLatteTransformer3DModel:
    """``latte``'s weights in a :class:`CaptionLatteTransformer3DModel` whose caption term starts at zero."""
    config = {k: v for k, v in latte.config.items() if not k.startswith("_")}
    model = CaptionLatteTransformer3DModel(**config)
    missing, unexpected = model.load_state_dict(latte.state_dict(), strict=False)
    if unexpected or any(not k.startswith("caption_mlp.") for k in missing):
        raise ValueError(f"weights that do not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model if latte.dtype == model.dtype else model.to(latte.dtype)
