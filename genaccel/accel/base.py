"""The technique contract and registry.

A technique is a frozen dataclass Config with a class-level ``name`` and the denoiser
``families`` it fits, plus an apply function registered with ``@technique(Config)`` that
patches one pipeline *instance* (hooks, never classes) and returns a ``Handle``. ``remove()``
restores the pipeline exactly; ``reset()`` clears per-job state. Dispatch is a dict lookup from
config type to apply function, so adding a technique touches no other file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from genaccel.errors import InvalidRequest
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
    families: ClassVar[tuple[str, ...]]
    alternatives: ClassVar[dict[str, str]]
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


def check_family(config: Any, family: str) -> None:
    """Refuse a technique that does not fit the model's denoiser family, naming an alternative."""
    if family in config.families:
        return
    alternative = config.alternatives.get(family, "pick a profile for this model (see `genaccel profiles`)")
    raise InvalidRequest("techniques", config.name, f"does not fit the {family} denoiser family "
                         f"(it fits {', '.join(config.families)})", alternative)


class Undo:
    """A ``Handle`` for a patch without per-job state: ``remove()`` runs ``undo`` once."""

    def __init__(self, undo: Callable[[], None] | None = None) -> None:
        self.undo = undo

    def reset(self) -> None:
        pass

    def remove(self) -> None:
        if self.undo is not None:
            self.undo()
            self.undo = None


class TechniqueSet:
    """The handles of several techniques applied in order; removed in reverse order."""

    def __init__(self, handles: Sequence[Handle], configs: Sequence[Any]) -> None:
        self.handles, self.configs = list(handles), list(configs)

    def reset(self) -> None:
        for handle in self.handles:
            handle.reset()

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": c.name, **dataclasses.asdict(c)} for c in self.configs]


def apply_techniques(pipe: Any, configs: Sequence[Any]) -> TechniqueSet:
    """Apply ``configs`` in order; on failure, undo what was applied and re-raise."""
    handles: list[Handle] = []
    try:
        for config in configs:
            apply = _APPLY.get(type(config))
            if apply is None:
                raise TypeError(f"no apply function registered for {type(config).__name__}")
            handles.append(apply(pipe, config))
    except BaseException:
        TechniqueSet(handles, []).remove()
        raise
    return TechniqueSet(handles, configs)


CALL_WRAPPERS = "_genaccel_call_wrappers"
CallWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def call_wrappers(pipe: Any) -> list[CallWrapper]:
    """Wrappers techniques put around the pipeline call of ``pipe`` (``pipelines.image`` applies
    them, innermost first): for techniques that need the call's arguments (guidance scale, step
    count) or change the call itself (shallow start)."""
    return list(getattr(pipe, CALL_WRAPPERS, ()))


def add_call_wrapper(pipe: Any, wrapper: CallWrapper) -> Callable[[], None]:
    """Install ``wrapper`` on ``pipe``; returns the function that takes it off again."""
    setattr(pipe, CALL_WRAPPERS, [*call_wrappers(pipe), wrapper])

    def remove() -> None:
        rest = [w for w in call_wrappers(pipe) if w is not wrapper]
        if rest:
            setattr(pipe, CALL_WRAPPERS, rest)
        elif hasattr(pipe, CALL_WRAPPERS):
            delattr(pipe, CALL_WRAPPERS)

    return remove
