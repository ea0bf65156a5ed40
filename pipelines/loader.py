"""Load a resolved model onto a device, and keep loaded pipelines in a small LRU cache."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from genaccel.errors import ModelNotAvailable, TechniqueRemoveFailed
from pipelines.registry import ModelInfo

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s asked for but CUDA is not available; using cpu", device)
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_pipeline(info: ModelInfo, device: torch.device, dtype: torch.dtype) -> Any:
    """Build or load the pipeline for ``info``; safetensors only, local files only."""
    if info.builder is not None:
        pipe = info.builder()
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
    else:
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        import pipelines.caption_latte  # noqa: F401  (saved models name it; diffusers finds it in sys.modules)

        diffusers_logging.disable_progress_bar()  # job progress is ours; no loader bars in logs
        transformers_logging.disable_progress_bar()
        try:
            pipe = DiffusionPipeline.from_pretrained(
                info.location, torch_dtype=dtype, use_safetensors=True, local_files_only=True,
            )
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(
                f"model {info.name!r} could not be loaded from {info.location} ({str(exc).splitlines()[0]}); "
                "fix: check that every component folder holds its config and .safetensors weights"
            ) from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass(frozen=True)
class CacheKey:
    """Two profiles never share a patched pipeline: the profile is part of the key."""

    model: str
    dtype: str
    device: str
    profile: str = "off"


def pipeline_bytes(pipe: Any) -> int:
    """Bytes of the weights and buffers of a pipeline's torch modules."""
    import torch

    total = 0
    for part in getattr(pipe, "components", {}).values():
        if isinstance(part, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*part.parameters(), *part.buffers()))
    return total


class ModelCache:
    """LRU of loaded pipelines owned by one worker. ``use`` holds the entry's lock while a job
    runs, so two threads never drive one pipeline (schedulers keep per-call state)."""

    def __init__(self, capacity: int = 2, budget_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.budget_bytes = budget_bytes
        """Evict least recently used pipelines while their weights together exceed this (the
        newest always stays)."""
        self._entries: OrderedDict[CacheKey, tuple[Any, threading.Lock]] = OrderedDict()
        self._sizes: dict[CacheKey, int] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def use(self, key: CacheKey, load: Callable[[], Any]) -> Iterator[Any]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is None:
            pipe = load()
            with self._lock:
                self.loads += 1
                entry = self._entries.setdefault(key, (pipe, threading.Lock()))
                self._sizes.setdefault(key, pipeline_bytes(pipe))
                self._entries.move_to_end(key)
                while len(self._entries) > 1 and (len(self._entries) > self.capacity or self._over_budget()):
                    old, _ = self._entries.popitem(last=False)
                    self._sizes.pop(old, None)
                    log.info("model cache: evicted %s", old)
        pipe, lock = entry
        with lock:
            try:
                yield pipe
            except TechniqueRemoveFailed:  # a technique could not be taken off: never hand this pipeline out again
                self.evict(key)
                raise

    def evict(self, key: CacheKey) -> bool:
        """Drop ``key``'s pipeline (a job that holds it keeps its reference); the next ``use``
        loads it again. Returns whether it was cached."""
        with self._lock:
            found = self._entries.pop(key, None) is not None
            self._sizes.pop(key, None)
        if found:
            log.warning("model cache: dropped %s", key)
        return found

    def _over_budget(self) -> bool:
        return self.budget_bytes is not None and sum(self._sizes.values()) > self.budget_bytes

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
