"""``--model_args`` of the lmms-eval plugins: which go to lmms-eval's own model class, which to the method.

One ``--model_args`` string carries three kinds of keys:

* the plugin's own: ``method`` (default ``psa``), ``config_file`` (a run config TOML, ``evals/*.toml``) and
  ``timing`` (measure the sparse planning and attention time);
* the arguments of lmms-eval's model class (Qwen2.5-VL's: ``pretrained``, ``max_num_frames``, ``fps``,
  ``max_pixels``, ``min_pixels``, ``device_map``, ``attn_implementation``, ...), passed on unchanged;
* fields of the method's config dataclass (``block_m``, ``thresholds``, ``preset``, ...). A list value is
  written as JSON inside the string: ``thresholds=[0.7,0.8,0.9,0.9]`` (quote the whole ``--model_args``).

A run config file's ``[run]`` table maps onto lmms-eval's frame arguments where the model class has them (for
Qwen2.5-VL ``frames`` -> ``max_num_frames``, ``fps``, ``min_pixels``, ``max_pixels``; each plugin gives its own
map); explicit ``--model_args`` win.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlmsparse.methods.config import Setting

__all__ = [
    "PLUGIN_KEYS",
    "RUN_KEY_TO_MODEL_ARG",
    "SparseArgs",
    "parse_model_args",
    "split_model_args",
    "run_config_model_args",
    "effective_model_args",
    "base_model_defaults",
    "check_frame_args",
]

#: The plugin's own keys.
PLUGIN_KEYS = ("method", "config_file", "timing")
#: ``[run]`` keys of a run config that lmms-eval's Qwen2.5-VL model takes, under its own argument names.
RUN_KEY_TO_MODEL_ARG = {"frames": "max_num_frames", "fps": "fps", "min_pixels": "min_pixels", "max_pixels": "max_pixels"}
#: ``[run]`` values that qwen-vl-utils (which lmms-eval's model samples frames with) uses anyway.
QWEN_VL_UTILS_RUN_DEFAULTS = {"min_frames": 4, "max_frames": 768}
#: The model the plugin loads when ``pretrained`` is not given (the harness's default too).
DEFAULT_PRETRAINED = "Qwen/Qwen2.5-VL-7B-Instruct"


@dataclass
class SparseArgs:
    """The method part of ``--model_args``: method name, run config file, timing, config field overrides, and
    the :class:`~vlmsparse.methods.Setting` they make (read and checked once, in :func:`split_model_args`)."""

    method: str = "psa"
    config_file: str | None = None
    timing: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    setting: Setting | None = None

    def __post_init__(self) -> None:
        if self.setting is None:  # built by hand: make the setting now, as split_model_args does
            from vlmsparse.methods.config import default_setting, load_setting

            if self.config_file is not None:
                self.setting = load_setting(self.config_file, self.overrides, method=self.method)
            else:
                self.setting = default_setting(self.method, **self.overrides)

    def method_config(self) -> dict[str, Any]:
        """The config fields set for this run: the config file's ``[method_config]``, then the overrides."""
        return dict(self.setting.method_config)

    def planners(self):
        """Every decoder layer's planner (per-layer settings of the config file included)."""
        return self.setting.build_planners()

    def setting_name(self) -> str:
        """The setting name a leaderboard row shows: the config file's ``name``, else ``default``."""
        return self.setting.name


def _convert(value: str) -> Any:
    """A ``key=value`` value as lmms-eval converts it (bool, int, float, else str), plus JSON lists/dicts."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.isnumeric():
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    return _json_value(text)


def _json_value(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"could not read {value!r} as a JSON list or object: {exc}") from exc
    return value


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_model_args(text: str) -> dict[str, Any]:
    """Parse a ``--model_args`` string (``k=v,k2=[1,2]``) as lmms-eval does, JSON lists and objects read."""
    out: dict[str, Any] = {}
    for part in _split_top_level(text or ""):
        if "=" not in part:
            raise ValueError(f"model argument {part!r} is not key=value")
        key, value = part.split("=", 1)
        out[key.strip()] = _convert(value)
    return out


def base_model_defaults(model_cls: type) -> dict[str, Any]:
    """Named ``__init__`` arguments of lmms-eval's model class with their defaults (no ``self``/``**kwargs``)."""
    params = inspect.signature(model_cls.__init__).parameters
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in params.items()
        if name != "self" and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def _method_fields(method: str) -> list[str]:
    from vlmsparse.methods import get_method_class

    return [*get_method_class(method).config_class.field_names(), "preset"]


def split_model_args(
    kwargs: dict[str, Any], base_args: Iterable[str] | None
) -> tuple[dict[str, Any], SparseArgs]:
    """Split parsed ``--model_args`` into (arguments of lmms-eval's model, :class:`SparseArgs`).

    A key that is neither the plugin's, nor the base model's, nor a field of the method's config raises
    ``ValueError`` naming all three lists. ``base_args=None``: every other key is taken as the base model's.
    A ``config_file`` is read once here; without ``method`` its method is taken.
    """
    config_file = kwargs.get("config_file")
    if config_file is not None and not Path(str(config_file)).is_file():
        raise ValueError(f"config_file {str(config_file)!r} does not exist; pass the path of a run config TOML")
    from vlmsparse.methods.config import default_setting, read_run_file, setting_from_run_file

    method = str(kwargs.get("method", "psa"))
    file = None
    if config_file is not None:
        file = read_run_file(config_file)
        if "method" in kwargs and file["method"] != method:
            raise ValueError(
                f"config_file {str(config_file)!r} is for method {file['method']!r}, not method={method!r}"
            )
        method = file["method"]
    fields = _method_fields(method)  # ValueError for an unknown method, listing the known ones
    if base_args is None:
        base_args = [k for k in kwargs if k not in PLUGIN_KEYS and k not in fields]
    base_args = set(base_args)
    base: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    unknown = []
    for key, value in kwargs.items():
        if key in PLUGIN_KEYS:
            continue
        if key in base_args:
            base[key] = value
        elif key in fields:
            overrides[key] = _json_value(value)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"unknown --model_args {sorted(unknown)}: the plugin takes {list(PLUGIN_KEYS)}, lmms-eval's model "
            f"takes {sorted(base_args)}, and method {method!r} takes the config fields {fields}"
        )
    timing = kwargs.get("timing", False)
    if not isinstance(timing, bool):
        raise ValueError(f"timing must be true or false, got {timing!r}")
    setting = setting_from_run_file(file, overrides) if file is not None else default_setting(method, **overrides)
    sparse = SparseArgs(
        method=method,
        config_file=None if config_file is None else str(config_file),
        timing=timing,
        overrides=overrides,
        setting=setting,
    )
    return base, sparse


def run_config_model_args(
    run: dict[str, Any], explicit: dict[str, Any], run_key_map: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """lmms-eval model arguments from a run config's ``[run]`` table: ``(arguments, keys left out)``.

    ``run_key_map``: ``[run]`` key -> the model class's argument (default ``RUN_KEY_TO_MODEL_ARG``, Qwen2.5-VL's).
    ``frames`` wins over ``fps`` (as in ``vlmsparse.eval``); an explicit frame-count or fps argument in
    ``explicit`` drops both. Keys the model has no argument for (Qwen2.5-VL: ``total_pixels``, ``max_new_tokens``,
    and ``min_frames`` / ``max_frames`` unless they equal qwen-vl-utils' own 4 / 768) come back as left out.
    """
    keys = RUN_KEY_TO_MODEL_ARG if run_key_map is None else run_key_map
    frames_arg, fps_arg = keys.get("frames"), keys.get("fps")
    out: dict[str, Any] = {}
    if frames_arg and run.get("frames") is not None:
        out[frames_arg] = int(run["frames"])
    elif fps_arg and run.get("fps") is not None:
        out[fps_arg] = float(run["fps"])
    if (frames_arg and frames_arg in explicit) or (fps_arg and fps_arg in explicit):
        out.pop(frames_arg, None)
        out.pop(fps_arg, None)
    for key in ("min_pixels", "max_pixels", "total_pixels"):
        if key in keys and key in run:
            out[keys[key]] = int(run[key])
    out = {k: v for k, v in out.items() if k not in explicit}
    skipped = {"fps"} if frames_arg and run.get("frames") is not None else set()  # frames wins: fps is not lost
    left_out = {
        k: v
        for k, v in run.items()
        if k not in keys and k not in skipped and not (fps_arg and QWEN_VL_UTILS_RUN_DEFAULTS.get(k) == v)
    }
    return out, left_out


def effective_model_args(
    kwargs: dict[str, Any],
    model_cls: type,
    *,
    default_pretrained: str = DEFAULT_PRETRAINED,
    run_key_map: dict[str, str] | None = None,
) -> tuple[dict[str, Any], SparseArgs, dict]:
    """``(base model arguments, SparseArgs, [run] keys left out)`` for lmms-eval's ``model_cls``.

    The base arguments hold the explicit ones, then those a config file's ``[run]`` adds (through
    ``run_key_map``, see :func:`run_config_model_args`); ``pretrained`` defaults to ``default_pretrained``
    (Qwen2.5-VL-7B-Instruct).
    """
    base, sparse = split_model_args(kwargs, base_model_defaults(model_cls))
    left_out: dict[str, Any] = {}
    if sparse.config_file is not None:
        from_run, left_out = run_config_model_args(sparse.setting.run, base, run_key_map)
        base.update(from_run)
    base.setdefault("pretrained", default_pretrained)
    check_frame_args(base)
    return base, sparse, left_out


def check_frame_args(base: dict[str, Any]) -> None:
    """``ValueError`` naming the bad one unless the frame arguments (``max_num_frames`` / ``max_frames_num``,
    ``fps``, ``min_pixels``, ``max_pixels``, ``total_pixels``) are positive numbers, ``min_pixels <= max_pixels``."""
    import math

    for key in ("max_num_frames", "max_frames_num", "min_pixels", "max_pixels", "total_pixels"):
        value = base.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    fps = base.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < math.inf):
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    lo, hi = base.get("min_pixels"), base.get("max_pixels")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min_pixels ({lo}) must be <= max_pixels ({hi})")
