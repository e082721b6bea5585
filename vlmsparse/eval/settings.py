"""What one evaluation run is: a method with its config (a *setting*), frame sampling, and its identity.

A setting comes from ``--method NAME`` (the method's defaults, setting name ``default``) or from a run config
file (``--config evals/psa.toml``: a name, a method, ``[method_config]`` fields and ``[run]`` harness keys).
CLI flags override ``[run]``. The run identity (``run_id``) hashes everything that changes the answers or which
questions are asked (the method's resolved config, frame sampling, the split, ``--limit`` and the questions
themselves), so a rerun of the same command finds its records and a changed setting starts a fresh record file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

from ..methods.config import RUN_KEYS, Setting, default_setting, load_setting
from .frames import FrameSpec

__all__ = [
    "Setting",
    "RUN_KEYS",
    "setting_from_config",
    "resolve_settings",
    "method_settings",
    "method_settings_text",
    "questions_digest",
    "frame_spec",
    "run_identity",
    "slugify",
]

#: Generated tokens per answer, as lmms-eval's Video-MME task.
DEFAULT_MAX_NEW_TOKENS = 16
#: Bumped when the prompt or the scoring changes, so older records are not mixed with newer ones.
PROTOCOL_VERSION = 1

#: A setting from a run config TOML file (read and checked once: method, fields, ``[run]`` keys).
setting_from_config = load_setting


def resolve_settings(methods: Sequence[str] | None, configs: Sequence[str] | None) -> list[Setting]:
    """Settings to run, in order: one per config file, else one per method name with its defaults.

    With both, every config's method must be among ``methods`` (``ValueError`` otherwise).
    """
    if configs:
        settings = [_load(c) for c in configs]
        if methods:
            stray = [s.source for s in settings if s.method not in methods]
            if stray:
                raise ValueError(
                    f"config file(s) {stray} are for other methods than --method {','.join(methods)}; "
                    "drop --method or pass matching configs"
                )
        return settings
    return [default_setting(name) for name in (methods or ["psa"])]


def _load(path: str) -> Setting:
    try:
        return load_setting(path)
    except ValueError as exc:  # a bad field value: say which file holds it
        raise ValueError(str(exc) if str(path) in str(exc) else f"config file {str(path)!r}: {exc}") from exc


def method_settings(setting: Setting) -> dict[str, Any]:
    """Every field of the setting's method config as it runs (defaults and preset resolved); ``{}`` for an
    unpatched run (the model's own attention)."""
    return {} if setting.unpatched else dataclasses.asdict(setting.config)


def method_settings_text(setting: Setting) -> str:
    """:func:`method_settings` as one leaderboard cell, ``k=v; ...`` (``unpatched`` for dense)."""
    fields = method_settings(setting)
    if not fields:
        return "unpatched"

    def text(value: Any) -> str:
        return "/".join(map(text, value)) if isinstance(value, (list, tuple)) else str(value)

    return "; ".join(f"{k}={text(v)}" for k, v in sorted(fields.items()))


def questions_digest(question_ids: Sequence[str], content: Sequence[Any] = ()) -> str:
    """A short hash of the questions a run asks (their ids and, optionally, their text), order included."""
    payload = json.dumps([list(question_ids), list(content)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: CLI frame flags that uniform sampling (a fixed frame count, sized by the processor) has no use for.
_FPS_ONLY_FLAGS = ("fps", "min_pixels", "max_pixels", "total_pixels")


def frame_spec(
    run: dict[str, Any], overrides: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
) -> FrameSpec:
    """The frame sampling of a setting: the model family's defaults (``defaults``, e.g. Qwen3-VL's 32-pixel
    factor; Qwen2.5-VL's when None), then its ``[run]`` keys, then CLI flags.

    A fixed ``frames`` wins over ``fps``; passing ``fps`` on the CLI (without ``frames``) drops the config's
    fixed ``frames``. With uniform sampling (LLaVA-OneVision) a CLI ``fps`` or pixel flag is a ``ValueError``.
    """
    values = dict(defaults or {})
    if values.get("sampling") == "uniform":
        given = [f"--{k.replace('_', '-')}" for k in _FPS_ONLY_FLAGS if (overrides or {}).get(k) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} do(es) not apply to this model: it takes a fixed number of frames spread "
                "uniformly, sized by its processor; set the count with --frames"
            )
    values.update({k: v for k, v in run.items() if k in FrameSpec.__dataclass_fields__})
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
    questions: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """``(run_id, identity)``: ``run_id`` names the run's record folder; ``identity`` is what it hashes.

    ``questions`` says which questions are asked (split, limit, a digest of the selected questions): runs that
    ask different questions never share a record file.
    """
    identity = {
        "bench": bench,
        "model": model,
        "method": setting.method,
        "method_config": setting.method_config,
        "method_settings": method_settings(setting),
        "questions": questions or {},
        "frames": spec.to_dict(),
        **(
            {"num_layers": setting.num_layers, "layer_overrides": [o.to_dict() for o in setting.layer_overrides]}
            if setting.layer_overrides else {}
        ),
        "dtype": dtype,
        "max_new_tokens": max_new_tokens,
        "protocol": PROTOCOL_VERSION,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    run_id = f"{bench}/{slugify(model)}/{slugify(setting.method)}-{slugify(setting.name)}-{digest}"
    return run_id, identity
