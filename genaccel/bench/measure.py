"""What one benchmark row measures besides wall time: denoiser evaluations and peak memory."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import psutil
import torch


class DenoiserCounter:
    """Counts denoiser evaluations, in samples: a CFG call on a batch of 2 counts 2, so the
    figure per image is what few-step and guidance-distilled models save. Also adds up the
    seconds spent inside the denoiser (what caching saves), synchronising CUDA around each call
    (benchmarks only: it costs a sync per call)."""

    def __init__(self, pipe: Any) -> None:
        self.module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        self.samples = 0
        self.calls = 0
        self.seconds = 0.0
        self._started = 0.0
        self._handles: list[Any] = []

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self.calls += 1
        shape = getattr(sample, "shape", None)
        self.samples += int(shape[0]) if shape is not None else 1
        self._sync()
        self._started = time.perf_counter()

    def _done(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> DenoiserCounter:
        if self.module is not None:
            self._handles = [self.module.register_forward_pre_hook(self._hook, with_kwargs=True),
                             self.module.register_forward_hook(self._done, with_kwargs=True)]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class PeakMemory:
    """Peak resident set size (sampled every ``interval_s``) and, on CUDA, peak allocated VRAM."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_vram: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._proc = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
        if torch.cuda.is_available():
            self.peak_vram = torch.cuda.max_memory_allocated()
