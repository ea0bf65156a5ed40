"""Out-of-memory handling: recognise it, free what can be freed, and switch a pipeline to
memory-saving options (VAE tiling and slicing, attention slicing) for one retry, then back."""

from __future__ import annotations

import gc
from typing import Any

from genaccel.errors import GenAccelError


class OutOfMemory(GenAccelError):
    code = "out_of_memory"
    http_status = 507


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


SAVERS = {  # name -> (object attribute, enable, disable)
    "vae_tiling": ("vae", "enable_tiling", "disable_tiling"),
    "vae_slicing": ("vae", "enable_slicing", "disable_slicing"),
    "attention_slicing": (None, "enable_attention_slicing", "disable_attention_slicing"),
}


def memory_saving(pipe: Any) -> list[str]:
    """Turn on what this pipeline supports; returns the names, for the job's metadata."""
    done = []
    for name, (part, on, _) in SAVERS.items():
        target = getattr(pipe, part, None) if part else pipe
        fn = getattr(target, on, None)
        if callable(fn):
            try:
                fn()
            except (AttributeError, NotImplementedError, ValueError):
                continue
            done.append(name)
    return done


def undo_memory_saving(pipe: Any, names: list[str]) -> None:
    for name in names:
        part, _, off = SAVERS[name]
        fn = getattr(getattr(pipe, part, None) if part else pipe, off, None)
        if callable(fn):
            fn()
