"""Acceleration techniques: each a frozen Config plus ``apply(pipe, config) -> Handle``, installed
through ``hooks.patching`` and checked before queueing by ``rules.check_techniques``.

Importing this package registers every built-in technique.
"""

from genaccel.accel import deepcache as deepcache
from genaccel.accel import density as density
from genaccel.accel import dit_cache as dit_cache
from genaccel.accel import levers as levers
from genaccel.accel import lora as lora
from genaccel.accel import quantize as quantize
from genaccel.accel import shallow as shallow
from genaccel.accel import solver as solver
from genaccel.accel import todo as todo
from genaccel.accel import tome as tome
from genaccel.accel import video_caches as video_caches
from genaccel.accel.base import Handle, TechniqueSet, apply_techniques, parse_technique, technique_names
from genaccel.accel.hooks import applied
from genaccel.accel.rules import RequestContext, check_family, check_techniques, technique_warnings

__all__ = ["Handle", "RequestContext", "TechniqueSet", "applied", "apply_techniques", "check_family",
           "check_techniques", "parse_technique", "technique_names", "technique_warnings"]
