"""Leaderboard CSVs: one row per model x method x setting, rewritten atomically on every change.

``results/videomme.csv`` holds the headline rows (``LEADERBOARD_COLUMNS``); ``results/videomme_task_types.csv``
next to it breaks each run down by Video-MME task type (``TASK_TYPE_COLUMNS``). A file is never edited in
place: the new content goes to a temporary file in the same folder, which then replaces the old one, so a
reader (or an interruption) never sees half a table. A rerun of the same run replaces its own row.
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

from vlmsparse.runs import folder_lock

from .errors import output_error
from .timing import CACHE_COLUMN, TIME_COLUMNS

Cell = Union[str, int, float, None]

#: The leaderboard's columns, in order (defined here only; :class:`LeaderboardRow` has one field per column).
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "model", "method", "setting", "config",  # what ran (config: the fields the setting sets)
    "method_settings",  # every field of the method's config as it ran
    "split", "limit",  # which questions: duration split, questions per duration
    "frames", "fps", "min_pixels", "max_pixels", "total_pixels",  # the frame sampling asked for
    "frames_used", "frame_pixels_used", "dtype",  # frames and pixels per frame sampled (smallest-largest), dtype
    "acc_short", "acc_medium", "acc_long", "acc_overall",  # accuracy per duration and overall
    "answer_prob",  # mean share of the right letter in the options' probability at the first reply token
    "n_short", "n_medium", "n_long", "n_overall", "n_errors", "n_missing",  # answered, errors, missing videos
    "sparsity", "visual_sparsity", "prefill_s_mean", "peak_mem_gib",  # what it cost
    "device", "num_processes", "date", "version", "data", "run_id",  # where, when, on what data, run identity
    *TIME_COLUMNS,  # where a question's time goes: means of the per-question split (vlmsparse.eval.timing)
    CACHE_COLUMN,  # share of answered questions whose frames came from the frame cache (--frame-cache)
)
#: Columns a row must name; every other one defaults to an empty cell.
_REQUIRED_COLUMNS = ("model", "method", "setting", "config", "split")


def _as_dict(self) -> dict[str, Cell]:
    """The row as ``{column: value}`` in column order (what the CSV writer and the printed table take)."""
    return {name: getattr(self, name) for name in LEADERBOARD_COLUMNS}


LeaderboardRow = make_dataclass(
    "LeaderboardRow",
    [(name, str) for name in _REQUIRED_COLUMNS]
    + [(name, Cell, field(default=None)) for name in LEADERBOARD_COLUMNS if name not in _REQUIRED_COLUMNS],
    namespace={"as_dict": _as_dict, "__module__": __name__},
)
LeaderboardRow.__doc__ = """One headline row of ``videomme.csv``: the one row type every exporter builds (the harness and the
lmms-eval exporter), with one keyword field per column of ``LEADERBOARD_COLUMNS`` (an unknown one is a
``TypeError``); ``None`` and ``""`` are empty cells."""


#: Columns that identify a row: a rerun with the same values replaces the row instead of adding one.
LEADERBOARD_KEY: tuple[str, ...] = ("run_id", "split", "limit")

TASK_TYPE_COLUMNS: tuple[str, ...] = (
    "model",
    "method",
    "setting",
    "split",
    "limit",
    "task_type",
    "n",
    "accuracy",
    "acc_short",
    "acc_medium",
    "acc_long",
    "sparsity",
    "run_id",
)
TASK_TYPE_KEY: tuple[str, ...] = ("run_id", "split", "limit", "task_type")


def read_rows(csv_path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of strings; an absent file has no rows."""
    path = Path(csv_path)
    if not path.is_file():
        return []
    with path.open("r", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_rows(csv_path: str | Path, rows: Iterable[dict], columns: Sequence[str], *, cell=None) -> None:
    """Write ``rows`` under ``columns`` atomically (temporary file in the same folder, then replace).

    ``cell`` turns a value into its cell (default: floats to 4 decimals, ``None`` empty); ``str`` keeps every
    digit, as the benchmarks' tables do."""
    cell = _cell if cell is None else cell
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; the table gets the mode of any file written here
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: cell(row.get(c)) for c in columns})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode(path: Path) -> int:
    """The permission bits of ``path`` if it exists, else those a new file gets (``0o666`` less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def upsert_rows(
    csv_path: str | Path,
    rows: Sequence[dict],
    *,
    columns: Sequence[str],
    key: Sequence[str] | None = None,
) -> None:
    """Add ``rows`` to the CSV; an existing row with the same ``key`` values as a new row is replaced."""
    unknown = sorted({c for row in rows for c in row} - set(columns))
    if unknown:
        raise ValueError(f"unknown columns {unknown}; the table's columns are {list(columns)}")

    def key_of(row: dict) -> tuple[str, ...] | None:
        return tuple(_cell(row.get(c)) for c in key) if key else None

    new_keys = {key_of(r) for r in rows} if key else set()
    try:
        with folder_lock(csv_path):
            kept = [r for r in read_rows(csv_path) if not key or key_of(r) not in new_keys]
            write_rows(csv_path, [*kept, *rows], columns)
    except OSError as exc:
        raise output_error("writing", csv_path, exc) from exc


def append_row(
    csv_path: str | Path, row: LeaderboardRow | dict, *, key: Sequence[str] | None = LEADERBOARD_KEY
) -> None:
    """Add one leaderboard row (atomic). With ``key``, a row of the same run and split is replaced."""
    if isinstance(row, LeaderboardRow):
        row = row.as_dict()
    upsert_rows(csv_path, [row], columns=LEADERBOARD_COLUMNS, key=key)


def append_task_type_rows(csv_path: str | Path, rows: Sequence[dict]) -> None:
    """Add the per-task-type rows of one run (atomic), replacing that run's previous ones."""
    upsert_rows(csv_path, rows, columns=TASK_TYPE_COLUMNS, key=TASK_TYPE_KEY)


def task_types_path(leaderboard_csv: str | Path) -> Path:
    """The breakdown table next to a leaderboard: ``videomme.csv`` -> ``videomme_task_types.csv``."""
    path = Path(leaderboard_csv)
    return path.with_name(f"{path.stem}_task_types{path.suffix}")
