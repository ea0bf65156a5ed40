"""One way to patch a pipeline instance, owned by the technique that patched it.

Every technique installs what it needs inside ``with patching(pipe, config) as patches:``, through
``patches``: diffusers ``ModelHook``s (its own with ``hook``, or those a diffusers ``apply_*``
function registers with ``diffusers_hooks``), torch module hooks, instance attributes, pipeline
call wrappers and plain undo functions. Each is recorded as it goes on, so

* applying a technique a second time to one pipeline (or to a module it shares with another
  pipeline) raises ``TechniqueAlreadyApplied``, and applying one that cannot stack with a
  technique already there (``rules.pair_conflict``) raises ``TechniqueConflict``, before anything
  is installed;
* an apply that raises part-way takes off what it had installed before the error leaves ``with``;
* ``Patches.undo()`` takes everything off in reverse order and leaves each module as it was: a
  hook registry genaccel created is deleted once empty, with the instance ``forward`` diffusers
  leaves behind, so no ``_diffusers_hook`` and no instance ``forward`` remain. It tries every step
  even when one raises, then raises ``TechniqueRemoveFailed`` (the pipeline must be dropped).

The configs applied to a pipeline are listed, in order, in its ``_genaccel_applied`` attribute
(``applied(pipe)``).

Why our own: diffusers' ``HookRegistry`` knows no owner per hook, leaves the registry and an
instance ``forward`` on a module after its last hook goes, and its ``apply_*`` functions register
hooks on sub-modules that only their names can find again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from genaccel.accel.rules import label, pair_conflict
from genaccel.errors import TechniqueAlreadyApplied, TechniqueConflict, TechniqueRemoveFailed

APPLIED = "_genaccel_applied"
CALL_WRAPPERS = "_genaccel_call_wrappers"
_PRIOR_FORWARD = "_genaccel_prior_forward"
"""Set on a ``HookRegistry`` genaccel created: the module's instance ``forward`` before it (or ``_ABSENT``)."""
_ABSENT = object()
CallWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def applied(pipe: Any) -> list[Any]:
    """The technique configs applied to ``pipe``, in the order they were applied."""
    return list(vars(pipe).get(APPLIED, ()))


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


class Patches:
    """What one technique installed on one pipeline, undone exactly and in reverse order.

    Created by ``patching``; the technique's handle calls ``undo()`` from its ``remove()``.
    """

    def __init__(self, pipe: Any, config: Any) -> None:
        self.pipe, self.config, self.label = pipe, config, label(config)
        self._steps: list[tuple[str, Callable[[], None]]] = []
        self._claimed = False

    def claim(self) -> None:
        """Record the technique on the pipeline; refuse a duplicate or a conflict with one already there."""
        for other in applied(self.pipe):
            if label(other) == self.label:
                raise TechniqueAlreadyApplied(self.label, f"is already applied to this {type(self.pipe).__name__}",
                                              f"remove it first (its handle's remove()); a request names "
                                              f"{self.label} once")
            problem = pair_conflict(other, self.config)
            if problem is not None:
                raise TechniqueConflict(self.label, problem[0], problem[1])
        vars(self.pipe).setdefault(APPLIED, []).append(self.config)
        self._claimed = True

    def _release(self) -> None:
        rest = [c for c in applied(self.pipe) if c is not self.config]
        if rest:
            vars(self.pipe)[APPLIED] = rest
        else:
            vars(self.pipe).pop(APPLIED, None)
        self._claimed = False

    def on_undo(self, what: str, undo: Callable[[], None]) -> None:
        """Record ``undo`` for a change the technique made itself (``what`` names it in errors)."""
        self._steps.append((what, undo))

    def hook(self, module: torch.nn.Module, hook: ModelHook, name: str) -> None:
        """Register ``hook`` as ``name`` on ``module`` (outermost of its hooks)."""
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(name) is not None:
            raise TechniqueAlreadyApplied(self.label, f"already has its hook {name} on this "
                                          f"{type(module).__name__} (shared with another pipeline?)",
                                          "remove it from the other pipeline first")
        if registry is None:
            prior = module.__dict__.get("forward", _ABSENT)
            registry = HookRegistry.check_if_exists_or_initialize(module)
            setattr(registry, _PRIOR_FORWARD, prior)
        registry.register_hook(hook, name)
        self._steps.append((f"hook {name} on {type(module).__name__}", lambda: _unhook(module, (name,))))

    def diffusers_hooks(self, root: torch.nn.Module, apply: Callable[[], None], names: Sequence[str]) -> None:
        """Run ``apply``, a diffusers ``apply_*`` function that registers hooks called ``names`` on
        ``root`` and its sub-modules; they are taken off by name."""
        modules = list(root.modules())
        for module in modules:
            registry = getattr(module, "_diffusers_hook", None)
            taken = [n for n in names if registry is not None and registry.get_hook(n) is not None]
            if taken:
                raise TechniqueAlreadyApplied(self.label, f"found the hook {taken[0]} already on this "
                                              f"{type(root).__name__}", "remove the technique that installed it first")
        prior = {id(m): m.__dict__.get("forward", _ABSENT) for m in modules if not hasattr(m, "_diffusers_hook")}

        def undo() -> None:
            for module in root.modules():
                _unhook(module, names)

        self._steps.append((f"hooks {', '.join(names)} on {type(root).__name__}", undo))
        try:
            apply()
        finally:  # mark the registries apply created, even the ones of a failed apply
            for module in root.modules():
                registry = getattr(module, "_diffusers_hook", None)
                if registry is not None and id(module) in prior:
                    setattr(registry, _PRIOR_FORWARD, prior[id(module)])

    def torch_hook(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        """Record a torch module hook (``register_forward_pre_hook`` and friends)."""
        self._steps.append(("a torch module hook", handle.remove))

    def set_attribute(self, obj: Any, name: str, value: Any) -> None:
        """Set ``obj.name`` to ``value``; undo restores the instance attribute, or its absence."""
        prior = vars(obj).get(name, _ABSENT)
        setattr(obj, name, value)

        def undo() -> None:
            if prior is _ABSENT:
                delattr(obj, name)
            else:
                setattr(obj, name, prior)

        self._steps.append((f"{type(obj).__name__}.{name}", undo))

    def call_wrapper(self, wrapper: CallWrapper) -> None:
        """Wrap the pipeline call (see ``call_wrappers``)."""
        self._steps.append(("a pipeline call wrapper", add_call_wrapper(self.pipe, wrapper)))

    def undo(self) -> None:
        """Take everything off, newest first; every step is tried. Raises ``TechniqueRemoveFailed``
        if one raised (the technique then stays recorded on the pipeline: it is not clean)."""
        errors: list[str] = []
        first: BaseException | None = None
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:
                errors.append(f"{what}: {type(exc).__name__}: {exc}")
                first = first or exc
        invalidate_hook_caches(self.pipe)
        if errors:
            raise TechniqueRemoveFailed([self.label], "; ".join(errors)) from first
        if self._claimed:
            self._release()


@contextmanager
def patching(pipe: Any, config: Any) -> Iterator[Patches]:
    """Open the record of what technique ``config`` installs on ``pipe``; if the body raises, what
    it installed is taken off again before the error propagates.

    Example:
        >>> with patching(pipe, config) as patches:
        ...     patches.hook(pipe.unet, MyHook(), "genaccel_mine")
        >>> handle = Patched(patches)  # handle.remove() calls patches.undo()
    """
    patches = Patches(pipe, config)
    patches.claim()
    try:
        yield patches
    except BaseException:
        patches.undo()  # a failure here raises TechniqueRemoveFailed, chained to the apply's error
        raise
    invalidate_hook_caches(pipe)


class Patched:
    """A ``Handle`` over ``Patches``: ``reset`` runs ``reset`` (if any), ``remove`` undoes the patches."""

    def __init__(self, patches: Patches, reset: Callable[[], None] | None = None) -> None:
        self.patches, self._reset = patches, reset

    def reset(self) -> None:
        if self._reset is not None:
            self._reset()

    def remove(self) -> None:
        self.patches.undo()


def _unhook(module: torch.nn.Module, names: Sequence[str]) -> None:
    """Remove hooks ``names`` from ``module``; a registry genaccel created is deleted once empty,
    and the module gets back the instance ``forward`` it had before (usually none)."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return
    for name in names:
        registry.remove_hook(name, recurse=False)
    if registry.hooks or not hasattr(registry, _PRIOR_FORWARD):
        return
    prior = getattr(registry, _PRIOR_FORWARD)
    del module._diffusers_hook
    if prior is _ABSENT:
        module.__dict__.pop("forward", None)
    else:
        module.__dict__["forward"] = prior


def _modules(pipe: Any) -> list[torch.nn.Module]:
    parts = getattr(pipe, "components", None)
    values = parts.values() if isinstance(parts, dict) else vars(pipe).values()
    return [m for m in values if isinstance(m, torch.nn.Module)]


def invalidate_hook_caches(pipe: Any) -> None:
    """Forget the child-registry lists diffusers caches per registry (stale once hooks come or go
    on sub-modules) in every module of ``pipe``."""
    for part in _modules(pipe):
        for module in part.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None:
                registry._child_registries_cache = None
