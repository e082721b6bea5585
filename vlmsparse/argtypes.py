"""Argument types shared by the command lines (``type=`` of argparse): each turns text into a checked value or
raises ``argparse.ArgumentTypeError`` with a one-line reason."""

from __future__ import annotations

import argparse
import math

__all__ = ["comma_list", "depths", "even_frame_counts", "numbers", "positive_float", "positive_int", "positive_ints"]


def comma_list(text: str) -> list[str]:
    """Names, comma-separated (at least one)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected one name or a comma-separated list")
    return items


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value}")
    return value


def numbers(text: str) -> list[float]:
    """Comma-separated numbers (at least one)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def positive_ints(text: str) -> list[int]:
    """Comma-separated integers >= 1 (at least one)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def even_frame_counts(text: str) -> list[int]:
    """Haystack lengths: even frame counts >= 2 (the vision towers take frames in pairs)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated frame counts, got {text!r}") from None
    if not values or any(v < 2 or v % 2 for v in values):
        raise argparse.ArgumentTypeError(f"expected even frame counts >= 2 (frames go in pairs), got {text!r}")
    return values


def depths(text: str) -> list[float]:
    """Needle depths within [0, 1], comma-separated."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated depths in [0, 1], got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected depths within [0, 1], got {text!r}")
    return values
