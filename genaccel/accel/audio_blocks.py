"""Registers the audio transformers' blocks with diffusers' ``TransformerBlockRegistry``, which
the first-block cache and MagCache need to find a model's blocks and their outputs: LongCat
AudioDiT's ``AudioDiTBlock`` and Stable Audio's ``StableAudioDiTBlock`` (the speech-ref decoder).
diffusers 0.42 registers neither. Both return the hidden states alone, like ``BasicTransformerBlock``.
Registering is idempotent (the registry is a dict keyed by class)."""

from __future__ import annotations

import functools


@functools.cache
def register_audio_blocks() -> None:
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.stable_audio_transformer import StableAudioDiTBlock
    from diffusers.models.transformers.transformer_longcat_audio_dit import AudioDiTBlock

    for cls, encoder_name in ((AudioDiTBlock, "cond"), (StableAudioDiTBlock, "encoder_hidden_states")):
        TransformerBlockRegistry.register(cls, TransformerBlockMetadata(
            return_hidden_states_index=0, return_encoder_hidden_states_index=None,
            encoder_hidden_states_argument_name=encoder_name))
