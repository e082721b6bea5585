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
Per-layer (and per-head) settings: ``num_layers = N`` and ``[[layer_overrides]]`` tables (see
:mod:`vlmsparse.methods.layers`); a ``[calibration]`` table records how a calibrated config was made (read by
people, not by the planners).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import Method, MethodConfig
from .layers import LayerOverride, LayerPlanners, build_planners, parse_layer_overrides

__all__ = [
    "Setting",
    "RunConfig",
    "RUN_KEYS",
    "load_setting",
    "load_run_config",
    "read_run_file",
    "setting_from_run_file",
    "default_setting",
    "build_config",
]

_TOP_LEVEL_KEYS = ("name", "description", "method", "method_config", "run", "num_layers", "layer_overrides", "calibration")
#: The method name whose runs (harness, lmms-eval model) leave the model unpatched: the full-attention baseline.
UNPATCHED_METHOD = "dense"
#: Keys a run config's ``[run]`` table may hold (frame sampling and generation length).
RUN_KEYS = ("frames", "fps", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels", "max_new_tokens")


@dataclass(frozen=True)
class Setting:
    """One named setting, checked once where it is made: which method, the config fields it sets, the method's
    built config, harness keys (``[run]``), and where it came from.

    ``method_config`` holds the fields as given (what the run identity hashes and the leaderboard shows);
    ``config`` is the method's config dataclass built from them (preset, defaults and all), which the planner
    gets as is. Make one with :func:`load_setting`, :func:`default_setting` or :meth:`with_fields`.
    """

    name: str
    method: str
    config: MethodConfig = field(compare=False, repr=False)
    method_config: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    #: per-layer settings (``[[layer_overrides]]``, fields checked) and the decoder layer count they were made for
    layer_overrides: tuple[LayerOverride, ...] = ()
    num_layers: int | None = None

    def config_summary(self) -> str:
        """Short text of the config fields set (``defaults`` when none), for the leaderboard."""
        text = "; ".join(f"{k}={_compact(v)}" for k, v in sorted(self.method_config.items())) or "defaults"
        if self.layer_overrides:
            layers = len({layer for o in self.layer_overrides for layer in o.layers})
            text += f"; per-layer settings for {layers} of {self.num_layers} layers"
        return text

    @property
    def unpatched(self) -> bool:
        """Whether a run of this setting uses the model's own attention, unpatched: the ``dense`` setting of
        the harness and the lmms-eval model is the full-attention baseline. (The ``dense`` planner itself, the
        all-exact plan through the pyramid kernel, is what ``vlmsparse.patch(model, "dense")`` runs.)"""
        return self.method == UNPATCHED_METHOD

    def build_method(self) -> Method:
        """The planner of this setting, on its already built config (nothing is checked again)."""
        from . import get_method_class  # late import: the registry imports this module

        return get_method_class(self.method)(self.config)

    def build_planners(self) -> LayerPlanners:
        """Every decoder layer's planner (one per distinct setting); without per-layer settings, one planner."""
        if not self.layer_overrides:
            return LayerPlanners(self.build_method())
        from . import get_method_class

        return build_planners(get_method_class(self.method), [self.method_config], self.layer_overrides,
                              self.num_layers, source=self.source or self.name)

    def with_fields(self, overrides: dict[str, Any]) -> "Setting":
        """This setting with more config fields (later wins); the config is rebuilt and checked once."""
        if not overrides:
            return self
        fields_ = {**self.method_config, **overrides}
        return _make(self.name, self.method, fields_, self.run, self.description, self.source,
                     _without(self.layer_overrides, overrides), self.num_layers)


#: The former name of :class:`Setting` (a run config file read into one).
RunConfig = Setting


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(_compact(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _without(overrides: tuple[LayerOverride, ...], keys: dict[str, Any]) -> tuple[LayerOverride, ...]:
    """Layer overrides less the fields set by keyword (keywords apply to every layer)."""
    out = []
    for o in overrides:
        kept = {k: v for k, v in o.fields.items() if k not in keys}
        out.append(LayerOverride(layers=o.layers, fields=kept, heads=o.heads))
    return tuple(out)


def _make(name: str, method: str, fields_: dict[str, Any], run: dict[str, Any], description: str,
          source: str, layer_overrides: tuple[LayerOverride, ...] = (), num_layers: int | None = None) -> Setting:
    from . import get_method_class  # late import: the registry imports this module

    config = build_config(get_method_class(method), fields_)  # unknown method, field or value: ValueError here
    return Setting(name=name, method=method, config=config, method_config=dict(fields_), run=dict(run),
                   description=description, source=source, layer_overrides=tuple(layer_overrides),
                   num_layers=num_layers)


def default_setting(method: str, **fields_: Any) -> Setting:
    """The setting ``default`` of ``method``: its defaults, then ``fields_`` (``ValueError`` for unknown ones)."""
    return _make("default", method, fields_, {}, "", "")


def read_run_file(path: str | Path) -> dict[str, Any]:
    """The checked contents of a run config TOML file (top-level keys, tables, ``[run]`` keys), not yet built
    into a setting: for callers that need its method name before they know their overrides."""
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
    for key in ("method_config", "run", "calibration"):
        if not isinstance(data.get(key, {}), dict):
            raise ValueError(f"config file {str(path)!r}: [{key}] must be a table")
    unknown = sorted(set(data.get("run", {})) - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown [run] keys {unknown}; allowed: {list(RUN_KEYS)}")
    return {**data, "method": str(data["method"]), "source": str(path), "name": str(data.get("name", path.stem))}


def setting_from_run_file(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Setting:
    """The setting of a file read by :func:`read_run_file`, ``overrides`` beating its ``[method_config]``."""
    from . import get_method_class

    fields_ = {**data.get("method_config", {}), **(overrides or {})}
    num_layers, layers = parse_layer_overrides(
        data.get("layer_overrides"), data.get("num_layers"), get_method_class(data["method"]), fields_,
        f"config file {data['source']!r}",
    )
    return _make(data["name"], data["method"], fields_, dict(data.get("run", {})), str(data.get("description", "")),
                 data["source"], _without(tuple(layers), overrides or {}), num_layers)


def load_setting(path: str | Path, overrides: dict[str, Any] | None = None, *, method: str | None = None) -> Setting:
    """Read a run config TOML file into a :class:`Setting` (see the module docstring for its schema).

    ``overrides``: config fields that beat the file's ``[method_config]``; ``method``: the method the file must
    be for. The method name, its fields and the ``[run]`` keys are checked here, once, so a typo fails before
    anything runs.
    """
    data = read_run_file(path)
    if method is not None and data["method"] != method:
        raise ValueError(f"config file {str(path)!r} is for method {data['method']!r}, not {method!r}")
    return setting_from_run_file(data, overrides)


#: The former name of :func:`load_setting`.
load_run_config = load_setting
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
