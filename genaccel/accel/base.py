"""The technique contract and registry.

A technique is a frozen dataclass Config with a class-level ``name`` and the denoiser
``families`` it fits, plus an apply function registered with ``@technique(Config)`` that
patches one pipeline *instance* through ``hooks.patching`` (hooks, never classes) and returns a
``Handle``. ``remove()`` restores the pipeline exactly; ``reset()`` clears per-job state.
Dispatch is a dict lookup from config type to apply function, so adding a technique touches no
other file. What may be combined, and on which models, is in ``rules``, beside each Config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from genaccel.accel.hooks import CALL_WRAPPERS as CALL_WRAPPERS
from genaccel.accel.hooks import CallWrapper as CallWrapper
from genaccel.accel.hooks import add_call_wrapper as add_call_wrapper
from genaccel.accel.hooks import call_wrappers as call_wrappers
from genaccel.accel.rules import label
from genaccel.errors import GenAccelError, InvalidRequest, TechniqueFailed, TechniqueRemoveFailed
from genaccel.families import Family
from genaccel.spec import TechniqueSpec


class Handle(Protocol):
    def reset(self) -> None:
        """Forget state carried between denoiser calls (call before every generation)."""
        ...

    def remove(self) -> None:
        """Undo the patch exactly; the pipeline behaves as before ``apply``."""
        ...


class TechniqueConfig(Protocol):
    name: ClassVar[str]
    families: ClassVar[tuple[Family, ...]]
    alternatives: ClassVar[dict[Family, str]]
    """For a family the technique does not fit: what to use there instead."""


C = TypeVar("C")
_APPLY: dict[type, Callable[[Any, Any], Handle]] = {}
_BY_NAME: dict[str, type] = {}


def technique(config_type: type[C]) -> Callable[[Callable[[Any, C], Handle]], Callable[[Any, C], Handle]]:
    """Register ``apply`` for ``config_type`` (a frozen dataclass with ``name`` and ``families``)."""
    def register(apply: Callable[[Any, C], Handle]) -> Callable[[Any, C], Handle]:
        _APPLY[config_type] = apply
        _BY_NAME[config_type.name] = config_type  # type: ignore[attr-defined]
        return apply
    return register


def technique_names() -> list[str]:
    return sorted(_BY_NAME)


def parse_technique(spec: TechniqueSpec) -> Any:
    """Build a technique's Config from a request's ``{"name": ..., "options": {...}}``."""
    cls = _BY_NAME.get(spec.name)
    if cls is None:
        raise InvalidRequest("techniques", spec.name, "no such technique",
                             f"use one of: {', '.join(technique_names()) or 'none'} (see `genaccel profiles`)")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec.options) - fields)
    if unknown:
        raise InvalidRequest(f"techniques.{spec.name}", unknown[0], "unknown option",
                             f"use: {', '.join(sorted(fields))}")
    try:
        return cls(**spec.options)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"techniques.{spec.name}", spec.options, str(exc),
                             f"see the options of {spec.name} in `genaccel profiles`") from None


class TechniqueSet:
    """The handles of several techniques applied in order; removed in reverse order."""

    def __init__(self, handles: Sequence[Handle], configs: Sequence[Any]) -> None:
        self.handles, self.configs = list(handles), list(configs)

    def reset(self) -> None:
        for handle in self.handles:
            handle.reset()

    def remove(self) -> None:
        """Remove every technique, newest first. Every one is tried even when one raises; then
        ``TechniqueRemoveFailed`` says the pipeline may not be clean (evict it from the cache)."""
        failed: list[tuple[str, BaseException]] = []
        handles, self.handles = self.handles, []
        for i in reversed(range(len(handles))):
            try:
                handles[i].remove()
            except Exception as exc:
                name = label(self.configs[i]) if i < len(self.configs) else type(handles[i]).__name__
                failed.append((name, exc))
        if len(failed) == 1 and isinstance(failed[0][1], TechniqueRemoveFailed):
            raise failed[0][1]
        if failed:
            detail = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failed)
            raise TechniqueRemoveFailed([name for name, _ in failed], detail) from failed[0][1]

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": c.name, **dataclasses.asdict(c)} for c in self.configs]


def apply_techniques(pipe: Any, configs: Sequence[Any]) -> TechniqueSet:
    """Apply ``configs`` in order. If one raises, the ones applied before it are removed (it has
    removed its own partial work) and the error propagates: a ``GenAccelError`` as it is, any other
    error as ``TechniqueFailed`` naming the technique; ``TechniqueRemoveFailed`` if taking anything
    off failed too (the pipeline is then not clean).

    Example:
        >>> techniques = apply_techniques(pipe, [SolverConfig(), DeepCacheConfig(interval=2)])
        >>> techniques.reset(); image = pipe("a red circle").images[0]
        >>> techniques.remove()
    """
    done = TechniqueSet([], [])
    for config in configs:
        try:
            apply = _APPLY.get(type(config))
            if apply is None:
                raise TypeError(f"no apply function registered for {type(config).__name__}")
            handle = apply(pipe, config)
        except BaseException as exc:
            done.remove()  # raises TechniqueRemoveFailed, chained to exc, if the pipeline stays dirty
            if isinstance(exc, GenAccelError) or not isinstance(exc, Exception):
                raise
            detail = (str(exc).splitlines() or [""])[0][:300]
            raise TechniqueFailed(label(config), f"failed while being applied to {type(pipe).__name__} "
                                  f"({type(exc).__name__}: {detail})",
                                  f"run the request without {label(config)} and report this error") from exc
        done.handles.append(handle)
        done.configs.append(config)
    return done
