"""Prompt-embedding cache: a loaded pipeline's text encoders remember their outputs by input, so
"vary seed", the outputs of a batch of variations and a repeated prompt skip the text encoder.

One diffusers ``ModelHook`` per text encoder instance (``text_encoder``, ``text_encoder_2``,
``text_encoder_3``), keyed by the bytes, shape and dtype of every tensor argument plus the other
arguments (``attention_mask``, ``output_hidden_states``...), so it is exact: a hit returns what
the encoder would have computed for that input (a copy: callers may change what they get). The
pipeline's call is untouched, so it works for every pipeline whose prompt goes through an
``nn.Module`` text encoder (CLIP, T5, UMT5, Gemma...). An LRU bounded by entries per encoder.

Why our own: diffusers caches denoiser work, not text-encoder outputs, and the pipelines'
``prompt_embeds`` arguments differ from one pipeline to the next; keying the encoder's own call
needs none of that.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

HOOK = "genaccel_prompt_cache"
ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


@dataclass
class CacheCounts:
    hits: int = 0
    misses: int = 0
    enabled: bool = True
    """Off while a technique may change the text encoders' outputs (a LoRA): calls then pass through."""


def _key(value: Any, digest: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        digest.update(f"T{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for v in value:
            _key(v, digest)
        digest.update(b"]")
    elif isinstance(value, dict):
        for k in sorted(value):
            digest.update(str(k).encode())
            _key(value[k], digest)
    else:
        digest.update(repr(value).encode())


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and not hasattr(value, "keys"):
        return type(value)(_copy(v) for v in value) if not hasattr(value, "_fields") else \
            type(value)(*(_copy(v) for v in value))
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):  # transformers ModelOutput, dict
        out = type(value)(**{k: _copy(value[k]) for k in value.keys()})  # noqa: SIM118
        return out
    return value


class PromptCacheHook(ModelHook):
    def __init__(self, size: int, counts: CacheCounts) -> None:
        super().__init__()
        self.size, self.counts = size, counts
        self.entries: OrderedDict[str, Any] = OrderedDict()

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not self.counts.enabled:
            return self.fn_ref.original_forward(*args, **kwargs)
        digest = hashlib.sha256()
        _key(args, digest)
        _key(kwargs, digest)
        key = digest.hexdigest()
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
            self.counts.hits += 1
            return _copy(found)
        self.counts.misses += 1
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.entries[key] = _copy(out)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return out


def attach_prompt_cache(pipe: Any, size: int) -> CacheCounts | None:
    """Give ``pipe``'s text encoders a cache of ``size`` entries each; returns the counters they
    share (``None`` when the pipeline has no text encoder module or ``size`` is 0)."""
    encoders = [m for m in (getattr(pipe, n, None) for n in ENCODERS) if isinstance(m, torch.nn.Module)]
    if size <= 0 or not encoders:
        return None
    counts = CacheCounts()
    for encoder in encoders:
        HookRegistry.check_if_exists_or_initialize(encoder).register_hook(PromptCacheHook(size, counts), HOOK)
    pipe._genaccel_prompt_cache = counts
    return counts


def prompt_cache_counts(pipe: Any) -> CacheCounts | None:
    """The counters of ``pipe``'s prompt cache, if it has one."""
    return getattr(pipe, "_genaccel_prompt_cache", None)
