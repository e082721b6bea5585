"""The one knob calibration turns for each method, and its default grid.

A knob maps a number to the method's config fields; a larger value keeps more (denser plans, lower error):

- ``psa``: ``threshold_scale``, a factor on the base setting's four cumulative thresholds (each capped at 1);
- ``xattention``: ``threshold`` (tau), the share of each row's estimated mass to keep;
- ``sparge``: ``cdf_threshold``, the per-row CDF bound of the pooled map (its similarity threshold stays at the
  base setting's value: set it with ``--config``).

``dense`` has no knob. Values between grid points are allowed (calibration interpolates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlmsparse.methods import MethodConfig

__all__ = ["Knob", "knob_for", "KNOBS"]


@dataclass(frozen=True)
class Knob:
    """A method's calibration knob: its name, default grid and valid range."""

    method: str
    name: str
    grid: tuple[float, ...]
    low: float
    high: float

    def fields(self, value: float, base: MethodConfig) -> dict[str, Any]:
        """The config fields that set this knob to ``value`` on top of ``base``."""
        value = float(value)
        if self.method == "psa":
            return {"thresholds": [round(min(1.0, t * value), 4) for t in base.thresholds]}
        if self.method == "xattention":
            return {"threshold": round(value, 4)}
        return {"cdf_threshold": round(value, 4)}

    def check_grid(self, grid: Sequence[float]) -> tuple[float, ...]:
        """``grid`` sorted descending (densest first); ``ValueError`` for fewer than two values or one out of range."""
        values = sorted({float(v) for v in grid}, reverse=True)
        if len(values) < 2:
            raise ValueError(f"--grid needs at least two distinct values of {self.name}, got {list(grid)}")
        bad = [v for v in values if not self.low < v <= self.high]
        if bad:
            raise ValueError(f"--grid values of {self.method}'s {self.name} must be in ({self.low}, {self.high}], got {bad}")
        return tuple(values)


#: 1.82 ~ 1 / 0.55: every threshold of the default PSA setting at 1 (all blocks exact); below 1 the level-8 bound
#: drops under 1 and the last blocks of a row are skipped
KNOBS: dict[str, Knob] = {
    "psa": Knob("psa", "threshold_scale", (1.82, 1.43, 1.25, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1), 0.0, 10.0),
    "xattention": Knob("xattention", "threshold", (1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.1), 0.0, 1.0),
    "sparge": Knob("sparge", "cdf_threshold", (1.0, 0.98, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.1), 0.0, 1.0),
}


def knob_for(method: str) -> Knob:
    """The knob of ``method``; ``ValueError`` for a method without one (``dense``) or an unknown one."""
    if method not in KNOBS:
        raise ValueError(
            f"method {method!r} has no knob to calibrate; choose one of {sorted(KNOBS)}"
        )
    return KNOBS[method]
