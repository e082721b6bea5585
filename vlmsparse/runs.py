"""Where a command writes when it is not told: a new run folder, ``runs/<kind>-<YYYYmmdd-HHMMSS>/``.

Benchmarks and the demo write there by default, so a trial never overwrites the committed tables in
``results/``; those change only when a command is asked to (``--results``, ``--out results``).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

__all__ = ["RUNS_DIR", "new_run_folder"]

RUNS_DIR = Path("runs")


def new_run_folder(kind: str, now: _dt.datetime | None = None) -> Path:
    """``runs/<kind>-<YYYYmmdd-HHMMSS>`` under the current folder (not created); a second later, a new name."""
    now = now or _dt.datetime.now()
    return RUNS_DIR / f"{kind}-{now:%Y%m%d-%H%M%S}"
