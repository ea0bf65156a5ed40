"""What may be combined, and on what: the checks that refuse a request's techniques before it is
queued, and the warnings a job records about combinations that run but barely help.

The rules are data and small functions kept beside each technique in ``genaccel/accel/``:

* ``families`` / ``alternatives`` on each Config: the denoiser families it fits (``check_family``);
* ``exclusive`` on a Config: a group of which one request may use one (the DiT caches share the
  transformer's cache context);
* ``comes_after`` on a Config: techniques that must be applied before it, with the reason;
* ``@checks(Config)`` functions: refusals that need the model or the request (a LoRA made for
  another family, MagCache without calibrated ratios, FasterCache without guidance);
* ``@warns(Config)`` functions: warnings for a job's metadata.

``check_techniques`` runs them all on a request's resolved configs (the profile's, then the
request's own); ``pipelines.prepare`` calls it before queueing, so a bad combination is an
``InvalidRequest`` (HTTP 422, CLI exit 2) naming both techniques, never a failed job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from genaccel.errors import InvalidRequest
from genaccel.settings import Settings


@dataclass(frozen=True)
class RequestContext:
    """What a technique's check and warnings may look at: the model and the resolved request.

    Args:
        family: the model's denoiser family (``genaccel.families.Family`` value).
        model: the model's name (for messages).
        location: the model's folder; ``None`` for built-in models.
        pipeline_class: the diffusers pipeline class name.
        guidance_scale: the resolved guidance scale.
        steps: the resolved step count.
        settings: the server's settings (LoRA folders, calibration files).
        profile: the request's profile.
        from_profile: how many of the configs checked come from the profile's recipe (they come first).
    """

    family: str | None = None
    model: str = ""
    location: Path | None = None
    pipeline_class: str = ""
    guidance_scale: float = 0.0
    steps: int = 0
    settings: Settings | None = None
    profile: str = "off"
    from_profile: int = 0

    def origin(self, index: int) -> str:
        return f"profile {self.profile}" if index < self.from_profile else "the request"

    def component_class(self, component: str) -> str | None:
        """The class name of ``component`` (``scheduler``, ``transformer``) from the model folder's
        ``model_index.json``; ``None`` when the folder or the entry is missing."""
        if self.location is None:
            return None
        try:
            entry = json.loads((self.location / "model_index.json").read_text()).get(component)
        except (OSError, ValueError, AttributeError):
            return None
        return str(entry[1]) if isinstance(entry, list) and len(entry) == 2 else None


C = TypeVar("C")
Check = Callable[[Any, RequestContext], None]
Warn = Callable[[Any, RequestContext], list[str]]
_CHECKS: dict[type, list[Check]] = {}
_WARNS: dict[type, list[Warn]] = {}


def checks(*config_types: type) -> Callable[[Callable[[C, RequestContext], None]], Callable[[C, RequestContext], None]]:
    """Register a pre-queue check for ``config_types``: raises ``InvalidRequest`` naming the fix."""
    def register(check: Callable[[C, RequestContext], None]) -> Callable[[C, RequestContext], None]:
        for config_type in config_types:
            _CHECKS.setdefault(config_type, []).append(check)
        return check
    return register


def warns(*config_types: type) -> Callable[[Callable[[C, RequestContext], list[str]]],
                                           Callable[[C, RequestContext], list[str]]]:
    """Register a function returning the warnings a job with ``config_types`` records."""
    def register(warn: Callable[[C, RequestContext], list[str]]) -> Callable[[C, RequestContext], list[str]]:
        for config_type in config_types:
            _WARNS.setdefault(config_type, []).append(warn)
        return warn
    return register


def label(config: Any) -> str:
    """How a request names this technique: its ``label`` (``lora:NAME``) if it has one, else its name."""
    return str(getattr(config, "label", config.name))


def check_family(config: Any, family: str) -> None:
    """Refuse a technique that does not fit the model's denoiser family, naming an alternative."""
    if family in config.families:
        return
    alternative = config.alternatives.get(family, "pick a profile for this model (see `genaccel profiles`)")
    raise InvalidRequest("techniques", config.name, f"does not fit the {family} denoiser family "
                         f"(it fits {', '.join(config.families)})", alternative)


def pair_conflict(first: Any, second: Any, where: str = "") -> tuple[str, str] | None:
    """Why ``second`` cannot be applied after ``first`` on one pipeline, and the fix; ``None`` if it
    can. ``where`` follows ``first``'s name in the message (`` from profile balanced``). The same
    technique twice is refused separately (``check_techniques``, ``hooks.Patches``)."""
    a, b = label(first), label(second)
    group = getattr(first, "exclusive", None)
    if group and group == getattr(second, "exclusive", None):
        return f"conflicts with {a}{where} (both are {group}: one request can use one)", f"drop {b} or {a}"
    reason = getattr(first, "comes_after", {}).get(second.name)
    if reason:
        return f"must come before {a}{where}: {reason}", f"list {b} before {a}"
    return None


def check_techniques(configs: Sequence[Any], context: RequestContext) -> None:
    """Refuse, before anything is queued, techniques that do not fit the model (family, per-technique
    checks), a technique named twice, and two that cannot stack. Raises ``InvalidRequest``.

    Example:
        >>> configs = technique_configs(request, info.family)  # the profile's, then the request's
        >>> check_techniques(configs, RequestContext(family=info.family, profile=request.profile,
        ...                                          from_profile=len(recipe.techniques)))
    """
    for i, config in enumerate(configs):
        if context.family is not None:
            check_family(config, context.family)
        for j in range(i):
            _check_pair(configs, j, i, context)
    for config in configs:
        for check in _CHECKS.get(type(config), ()):
            check(config, context)


def _check_pair(configs: Sequence[Any], i: int, j: int, context: RequestContext) -> None:
    """Refuse ``configs[j]`` after ``configs[i]`` (``i < j``) if they cannot stack."""
    a, b = label(configs[i]), label(configs[j])
    same_origin = context.origin(i) == context.origin(j)
    if a == b:
        if same_origin:
            raise InvalidRequest("techniques", b, f"is named twice in {context.origin(j)}",
                                 f"name {b} once, with the options you want")
        raise InvalidRequest("techniques", b, f"is named twice: {context.origin(i)} already applies {a}",
                             f"drop {b} from the request's techniques, or use profile off and name {b} with "
                             "the options you want")
    problem = pair_conflict(configs[i], configs[j], "" if same_origin else f" from {context.origin(i)}")
    if problem is not None:
        limit, fix = problem
        if not same_origin:
            fix += " (or use profile off and name the techniques you want)"
        raise InvalidRequest("techniques", b, limit, fix)


def technique_warnings(configs: Sequence[Any], context: RequestContext) -> list[str]:
    """Combinations that work but barely help, to say in the job's metadata rather than refuse."""
    found: list[str] = []
    for config in configs:
        for warn in _WARNS.get(type(config), ()):
            found += [w for w in warn(config, context) if w not in found]
    return found


FEW_STEPS = 8


def few_steps_warning(config: Any, context: RequestContext) -> list[str]:
    """For caches (``@warns`` registers it beside each): they reuse work between neighbouring steps,
    and a few-step schedule leaves little to reuse."""
    if 0 < context.steps <= FEW_STEPS:
        return [f"{config.name} at {context.steps} steps saves little and costs quality: caching reuses work "
                "between neighbouring steps, and few-step sampling leaves little to reuse"]
    return []
