"""What one evaluation run is: a method with its config (a *setting*), frame sampling, and its identity.

A setting comes from ``--method NAME`` (the method's defaults, setting name ``default``) or from a run config
file (``--config evals/psa.toml``: a name, a method, ``[method_config]`` fields and ``[run]`` harness keys).
CLI flags override ``[run]``. The run identity (``run_id``) hashes everything that changes the answers, so a
rerun of the same command finds its records and a changed setting starts a fresh record file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .frames import FrameSpec

#: Keys a run config's ``[run]`` table may hold (frame sampling and generation length).
RUN_KEYS = ("frames", "fps", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels", "max_new_tokens")
#: Generated tokens per answer, as lmms-eval's Video-MME task.
DEFAULT_MAX_NEW_TOKENS = 16
#: Bumped when the prompt or the scoring changes, so older records are not mixed with newer ones.
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Setting:
    """One method with its config fields, as one leaderboard row names it."""

    name: str
    method: str
    method_config: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""

    def config_summary(self) -> str:
        """Short text of the config fields set (``defaults`` when none), for the leaderboard."""
        if not self.method_config:
            return "defaults"
        return "; ".join(f"{k}={_compact(v)}" for k, v in sorted(self.method_config.items()))


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(_compact(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _check_run_keys(run: dict[str, Any], where: str) -> None:
    unknown = sorted(set(run) - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown [run] keys {unknown}; allowed: {list(RUN_KEYS)}")


def setting_from_config(path: str | Path) -> Setting:
    """A setting from a run config TOML file (validated against the method's config dataclass)."""
    from ..methods import load_run_config

    cfg = load_run_config(path)
    _check_run_keys(cfg.run, str(path))
    return Setting(
        name=cfg.name,
        method=cfg.method,
        method_config=dict(cfg.method_config),
        run=dict(cfg.run),
        description=cfg.description,
        source=str(path),
    )


def resolve_settings(methods: Sequence[str] | None, configs: Sequence[str] | None) -> list[Setting]:
    """Settings to run, in order: one per config file, else one per method name with its defaults.

    With both, every config's method must be among ``methods`` (``ValueError`` otherwise).
    """
    from ..methods import available_methods

    if configs:
        settings = [setting_from_config(c) for c in configs]
        if methods:
            stray = [s.source for s in settings if s.method not in methods]
            if stray:
                raise ValueError(
                    f"config file(s) {stray} are for other methods than --method {','.join(methods)}; "
                    "drop --method or pass matching configs"
                )
        return settings
    names = list(methods or ["psa"])
    known = available_methods()
    for name in names:
        if name not in known:
            raise ValueError(f"unknown method {name!r}; available methods: {known}")
    return [Setting(name="default", method=name) for name in names]


def frame_spec(run: dict[str, Any], overrides: dict[str, Any] | None = None) -> FrameSpec:
    """The frame sampling of a setting: Qwen2.5-VL's defaults, then its ``[run]`` keys, then CLI flags.

    A fixed ``frames`` wins over ``fps``; passing ``fps`` on the CLI (without ``frames``) drops the config's
    fixed ``frames``.
    """
    values = {k: v for k, v in run.items() if k in FrameSpec.__dataclass_fields__}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        values[key] = value
        if key == "fps" and overrides.get("frames") is None:
            values.pop("frames", None)
    return FrameSpec(**values)


def slugify(text: str) -> str:
    """A file-name-safe form of ``text`` (hub ids keep their owner: ``Qwen/X`` -> ``Qwen--X``)."""
    text = text.rstrip("/\\")
    if Path(text).is_absolute() or text.startswith("."):
        text = Path(text).name
    text = text.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def run_identity(
    *,
    bench: str,
    model: str,
    setting: Setting,
    spec: FrameSpec,
    dtype: str,
    max_new_tokens: int,
) -> tuple[str, dict[str, Any]]:
    """``(run_id, identity)``: ``run_id`` names the run's record folder; ``identity`` is what it hashes."""
    identity = {
        "bench": bench,
        "model": model,
        "method": setting.method,
        "method_config": setting.method_config,
        "frames": spec.to_dict(),
        "dtype": dtype,
        "max_new_tokens": max_new_tokens,
        "protocol": PROTOCOL_VERSION,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    run_id = f"{bench}/{slugify(model)}/{slugify(setting.method)}-{slugify(setting.name)}-{digest}"
    return run_id, identity
