"""Argument types shared by the command lines (``type=`` of argparse): each turns text into a checked value or
raises ``argparse.ArgumentTypeError`` with a one-line reason."""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

__all__ = ["comma_list", "depths", "device", "even_frame_counts", "numbers", "positive_float", "positive_int",
           "positive_ints", "require_available"]

T = TypeVar("T", int, float)


def comma_list(text: str) -> list[str]:
    """Names, comma-separated (at least one)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected one name or a comma-separated list")
    return items


def _one(text: str, cast: Callable[[str], T], what: str, ok: Callable[[T], bool], rule: str) -> T:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {rule}, got {value}")
    return value


def _many(text: str, cast: Callable[[str], T], what: str, ok: Callable[[T], bool], rule: str) -> list[T]:
    """Comma-separated values, at least one, each passing ``ok``."""
    try:
        values = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values or not all(ok(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}")
    return values


def positive_int(text: str) -> int:
    return _one(text, int, "an integer", lambda v: v >= 1, "an integer >= 1")


def positive_float(text: str) -> float:
    return _one(text, float, "a number", lambda v: 0 < v < math.inf, "a finite number > 0")


def numbers(text: str) -> list[float]:
    """Comma-separated numbers (at least one)."""
    return _many(text, float, "numbers", lambda v: True, "at least one number")


def positive_ints(text: str) -> list[int]:
    """Comma-separated integers >= 1 (at least one)."""
    return _many(text, int, "integers", lambda v: v >= 1, "comma-separated integers >= 1")


def even_frame_counts(text: str) -> list[int]:
    """Haystack lengths: even frame counts >= 2 (the vision towers take frames in pairs)."""
    return _many(text, int, "frame counts", lambda v: v >= 2 and v % 2 == 0,
                 "even frame counts >= 2 (frames go in pairs)")


def depths(text: str) -> list[float]:
    """Needle depths within [0, 1], comma-separated."""
    return _many(text, float, "depths in [0, 1]", lambda v: 0.0 <= v <= 1.0, "depths within [0, 1]")


def _even_pair(text: str, form: str, example: str, minimum: int) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {form}, e.g. {example}, got {text!r}") from None
    if a < minimum or b < minimum or a % 2 or b % 2:
        raise argparse.ArgumentTypeError(f"expected {form} with even sides >= {minimum}, got {text!r}")
    return a, b


def video_size(text: str) -> tuple[int, int]:
    """``(width, height)`` in pixels from ``WIDTHxHEIGHT``: even sides of at least 16 (what H.264 encoders take)."""
    return _even_pair(text, "WIDTHxHEIGHT in pixels", "1280x720", 16)


def patch_grid(text: str) -> tuple[int, int]:
    """``(h, w)`` patches per frame from ``HxW``: even sides of at least 2 (2 x 2 patches merge into one token)."""
    return _even_pair(text, "HxW in patches", "36x64", 2)


def device(text: str) -> str:
    """A torch device kind the commands run on: ``cpu``, ``cuda`` or ``cuda:N``. Whether this machine has CUDA is
    :func:`require_available`'s to say, once a command is about to run (an example line parses anywhere)."""
    import torch

    try:
        kind = torch.device(text).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda (cuda:N for one GPU), got {text!r}")
    return text


def require_available(device: str) -> None:
    """``ValueError`` if ``device`` (a :func:`device` value) is a CUDA device and this machine has none."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was given but no CUDA device is available here; use --device cpu")
