"""Mask planners: ``dense``, ``psa``, ``xattention``, ``sparge``.

Each turns (q, k, token layout) into a block plan for the one pyramid kernel (a binary block mask is a plan
with levels {0, 1}). Text stays dense and visual tokens sparse, by the same layout rules for every method
(see :mod:`vlmsparse.methods.base`)::

    method = get_method("psa")                       # published defaults
    method = get_method("psa", preset="videomme")    # a named preset
    method = get_method("xattention", threshold=0.95, config_file="evals/xattn.toml")
    plan = method.plan(q, k, visual)                 # Plan: levels [B, Hm, nQB, nKB] + block sizes
    planners = get_planners("psa", config_file="calibrated.toml")   # per-layer settings of a run config
    plan = planners.for_layer(3).plan(q, k, visual)
    out = pyramid_attention(q, k, v, plan.levels, **plan.kernel_kwargs())
    print(plan.sparsity().overall)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import BlockLayout, Method, MethodConfig, Plan, PlanSparsity
from .config import RunConfig, Setting, build_config, default_setting, load_run_config, load_setting
from .layers import LayerOverride, LayerPlanners

__all__ = [
    "get_method",
    "get_planners",
    "get_method_class",
    "available_methods",
    "registry",
    "register_method",
    "Method",
    "MethodConfig",
    "Plan",
    "PlanSparsity",
    "BlockLayout",
    "Setting",
    "load_setting",
    "default_setting",
    "RunConfig",
    "load_run_config",
    "LayerOverride",
    "LayerPlanners",
]

#: method name -> "module:ClassName" (imported on first use)
registry: dict[str, str] = {
    "dense": "vlmsparse.methods.dense:Dense",
    "psa": "vlmsparse.methods.psa:PSA",
    "xattention": "vlmsparse.methods.xattention:XAttention",
    "sparge": "vlmsparse.methods.sparge:Sparge",
}


def register_method(name: str, target: str) -> None:
    """Register a planner as ``"package.module:ClassName"`` (a :class:`Method` subclass)."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:ClassName', got {target!r}")
    registry[name] = target


def available_methods() -> list[str]:
    """Names accepted by :func:`get_method`."""
    return sorted(registry)


def get_method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass registered under ``name``."""
    if name not in registry:
        raise ValueError(f"unknown method {name!r}; available methods: {available_methods()}")
    module_name, cls_name = registry[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"registry entry {name!r} -> {registry[name]!r} is not a Method subclass")
    return cls


def get_method(name: str, *, config_file: str | Path | None = None, **overrides: Any) -> Method:
    """Build a planner: its defaults, then ``config_file`` (a run config TOML), then keyword overrides.

    Keywords are fields of the method's config dataclass, or ``preset="<name>"``. An unknown method, preset
    or field raises ``ValueError`` listing what exists. Per-layer settings of the file are not applied here (this
    is the planner of the layers without one): :func:`get_planners` builds every layer's.
    """
    if config_file is not None:
        return load_setting(config_file, overrides, method=name).build_method()
    cls = get_method_class(name)
    return cls(build_config(cls, overrides))


def get_planners(name: str | None, *, config_file: str | Path | None = None, **overrides: Any) -> LayerPlanners:
    """Every decoder layer's planner: defaults, then ``config_file`` (its ``[method_config]`` and per-layer
    ``[[layer_overrides]]``), then keyword overrides (applied to every layer). One planner per distinct setting.
    ``name`` None: the method the file names (without a file, ``psa``); a name that is not the file's raises
    ``ValueError``.
    """
    if config_file is not None:
        return load_setting(config_file, overrides, method=name).build_planners()
    return default_setting(name or "psa", **overrides).build_planners()
