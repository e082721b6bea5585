"""Where a command writes when it is not told: a new run folder, ``runs/<kind>-<YYYYmmdd-HHMMSS>/``.

Benchmarks and the demo write there by default, so a trial never overwrites the committed tables in
``results/``; those change only when a command is asked to (``--results``, ``--out results``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path

__all__ = ["RUNS_DIR", "folder_lock", "new_run_folder"]

RUNS_DIR = Path("runs")


def new_run_folder(kind: str, now: _dt.datetime | None = None) -> Path:
    """``runs/<kind>-<YYYYmmdd-HHMMSS>`` under the current folder (not created); a second later, a new name."""
    now = now or _dt.datetime.now()
    return RUNS_DIR / f"{kind}-{now:%Y%m%d-%H%M%S}"


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike):
    """Hold an exclusive lock on the folder of ``path`` (created if missing) while a table in it is read, changed
    and written back, so that runs sharing the folder never lose each other's rows. The folder itself is the lock
    (no lock file is left behind); where ``fcntl`` is missing (not POSIX) nothing is locked."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
