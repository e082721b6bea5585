"""Run configs (TOML) and building a method's config dataclass from defaults, a preset, a file and keywords.

A run config file names a setting and its method::

    name = "psa-paper"            # setting name shown in results
    description = "..."
    method = "psa"
    [method_config]               # fields of the method's config dataclass (unknown field -> ValueError)
    thresholds = [0.7, 0.8, 0.9, 0.9]
    [run]                         # harness settings (frames, fps, max_pixels, ...); CLI flags override
    frames = 64

``method_config`` may also hold ``preset = "<name>"`` to start from one of the method's named presets.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import MethodConfig

__all__ = ["RunConfig", "load_run_config", "build_config"]

_TOP_LEVEL_KEYS = ("name", "description", "method", "method_config", "run")


@dataclass
class RunConfig:
    """One named setting: which method, its config fields, and harness settings."""

    name: str
    method: str
    method_config: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def load_run_config(path: str | Path) -> RunConfig:
    """Read a run config TOML file (see the module docstring for its schema).

    The method name and its fields are checked against the registry, so a typo fails here, not mid-run.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f"config file {str(path)!r} has unknown keys {unknown}; allowed: {list(_TOP_LEVEL_KEYS)}")
    if "method" not in data:
        raise ValueError(f"config file {str(path)!r} must set method = \"<name>\"")
    for key in ("method_config", "run"):
        if not isinstance(data.get(key, {}), dict):
            raise ValueError(f"config file {str(path)!r}: [{key}] must be a table")
    cfg = RunConfig(
        name=str(data.get("name", path.stem)),
        method=str(data["method"]),
        method_config=dict(data.get("method_config", {})),
        run=dict(data.get("run", {})),
        description=str(data.get("description", "")),
    )
    from . import get_method_class  # late import: the registry imports this module

    build_config(get_method_class(cfg.method), cfg.method_config)  # validate now
    return cfg


def build_config(method_cls: type, *layers: dict[str, Any]) -> MethodConfig:
    """The method's config: defaults, then a named preset, then each layer of field values (later wins).

    Any layer may name ``preset = "<name>"`` (the last one named wins); the preset applies before every layer's
    own fields, so explicit fields always beat the preset.
    """
    config_cls = method_cls.config_class
    names = config_cls.field_names()
    presets = getattr(method_cls, "presets", {})
    values: dict[str, Any] = {}
    chosen = None
    for layer in layers:
        if layer.get("preset") is not None:
            chosen = layer["preset"]
    if chosen is not None:
        if chosen not in presets:
            raise ValueError(
                f"unknown preset {chosen!r} for method {method_cls.name!r}; available: {sorted(presets) or 'none'}"
            )
        values.update(presets[chosen])
    for layer in layers:
        layer = {key: val for key, val in layer.items() if key != "preset"}
        unknown = sorted(set(layer) - set(names))
        if unknown:
            raise ValueError(
                f"unknown config field(s) {unknown} for method {method_cls.name!r}; its fields are: {names}"
            )
        values.update(layer)
    return config_cls(**values)
