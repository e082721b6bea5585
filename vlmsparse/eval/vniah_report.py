"""What a needle-in-a-haystack run reports: its leaderboard row, its per-cell rows, a heatmap and a table.

``vniah.csv``: one row per model x method x setting x grid: accuracy overall, per haystack length and per
depth (as ``length:accuracy`` lists, since the grid is the user's), the worst cell, overall and visual
sparsity (overall and per length), mean prefill seconds, peak memory, device, seed, date and version.
``vniah_cells.csv``: one row per (length, depth) cell of each run, which the heatmap draws: accuracy over
haystack length (x) and depth (y), the picture long-video papers show.
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from . import leaderboard as lb
from .aggregate import Tally

__all__ = [
    "VNIAH_COLUMNS",
    "VNIAH_KEY",
    "CELL_COLUMNS",
    "CELL_KEY",
    "Grid",
    "tally_grid",
    "leaderboard_row",
    "cell_rows",
    "write_rows",
    "heatmap",
    "heatmap_path",
    "table",
]

VNIAH_COLUMNS: tuple[str, ...] = (
    "model", "method", "setting", "config", "haystack", "seed", "lengths", "depths", "samples", "frame_size",
    "needle", "needle_frames", "max_visual_tokens", "dtype", "acc_overall", "acc_by_length", "acc_by_depth",
    "acc_min_cell", "answer_prob", "answer_prob_min_cell", "n_overall", "n_errors", "sparsity", "visual_sparsity",
    "sparsity_by_length", "prefill_s_mean", "peak_mem_gib", "device", "date", "version", "run_id",
)
VNIAH_KEY: tuple[str, ...] = ("run_id", "lengths", "depths", "samples")
CELL_COLUMNS: tuple[str, ...] = (
    "model", "method", "setting", "seed", "length", "visual_tokens", "depth", "samples", "n", "n_errors", "accuracy",
    "answer_prob", "sparsity", "visual_sparsity", "prefill_s_mean", "device", "date", "run_id",
)
CELL_KEY: tuple[str, ...] = ("run_id", "length", "depth", "samples")


class Grid:
    """Tallies of one run's records: overall, per length, per depth and per (length, depth) cell."""

    def __init__(self, lengths: Sequence[int], depths: Sequence[float]):
        self.lengths, self.depths = list(lengths), list(depths)
        self.overall = Tally()
        self.by_length: dict[int, Tally] = {L: Tally() for L in lengths}
        self.by_depth: dict[float, Tally] = {d: Tally() for d in depths}
        self.cells: dict[tuple[int, float], Tally] = defaultdict(Tally)
        self.peak_mem_gib: float | None = None
        self.devices: list[str] = []

    def add(self, record: dict) -> None:
        length, depth = int(record["length"]), float(record["depth"])
        self.overall.add(record)
        self.by_length.setdefault(length, Tally()).add(record)
        self.by_depth.setdefault(depth, Tally()).add(record)
        self.cells[(length, depth)].add(record)
        if record.get("peak_mem_gib") is not None:
            self.peak_mem_gib = max(self.peak_mem_gib or 0.0, float(record["peak_mem_gib"]))
        device = record.get("device")
        if device and device not in self.devices:
            self.devices.append(device)

    def min_cell(self, what: str = "accuracy") -> float | None:
        """The lowest cell's ``what`` (a :class:`Tally` property: accuracy, answer_prob)."""
        values = [v for t in self.cells.values() if (v := getattr(t, what)) is not None]
        return min(values) if values else None


def tally_grid(records: Iterable[dict], lengths: Sequence[int], depths: Sequence[float]) -> Grid:
    """Fold a run's records into a :class:`Grid`."""
    grid = Grid(lengths, depths)
    for record in records:
        grid.add(record)
    return grid


def _pairs(values: dict, fmt: str = "{:.3f}") -> str:
    return " ".join(f"{k:g}:{'-' if v is None else fmt.format(v)}" for k, v in values.items())


def leaderboard_row(*, grid: Grid, spec, setting, model: str, dtype: str, run_id: str, version: str) -> dict:
    """The ``vniah.csv`` row of one run."""
    return {
        "model": model,
        "method": setting.method,
        "setting": setting.name,
        "config": setting.config_summary(),
        "haystack": spec.haystack,
        "seed": spec.seed,
        "lengths": "/".join(str(L) for L in spec.lengths),
        "depths": "/".join(f"{d:g}" for d in spec.depths),
        "samples": spec.samples,
        "frame_size": spec.needle.frame_size,
        "needle": spec.needle.kind,
        "needle_frames": spec.needle.needle_frames,
        "max_visual_tokens": spec.visual_tokens(max(spec.lengths)),
        "dtype": dtype,
        "acc_overall": grid.overall.accuracy,
        "acc_by_length": _pairs({L: grid.by_length[L].accuracy for L in spec.lengths}),
        "acc_by_depth": _pairs({d: grid.by_depth[d].accuracy for d in spec.depths}),
        "acc_min_cell": grid.min_cell(),
        "answer_prob": grid.overall.answer_prob,
        "answer_prob_min_cell": grid.min_cell("answer_prob"),
        "n_overall": grid.overall.answered,
        "n_errors": grid.overall.errors,
        "sparsity": grid.overall.sparsity,
        "visual_sparsity": grid.overall.visual_sparsity,
        "sparsity_by_length": _pairs({L: grid.by_length[L].sparsity for L in spec.lengths}),
        "prefill_s_mean": grid.overall.prefill_s,
        "peak_mem_gib": grid.peak_mem_gib,
        "device": "; ".join(grid.devices),
        "date": _dt.date.today().isoformat(),
        "version": version,
        "run_id": run_id,
    }


def cell_rows(row: dict, grid: Grid, spec) -> list[dict]:
    """The ``vniah_cells.csv`` rows of one run."""
    out = []
    for length in spec.lengths:
        for depth in spec.depths:
            tally = grid.cells.get((length, depth), Tally())
            out.append({
                "model": row["model"], "method": row["method"], "setting": row["setting"], "seed": row["seed"],
                "length": length, "visual_tokens": spec.visual_tokens(length), "depth": f"{depth:g}",
                "samples": spec.samples, "n": tally.answered, "n_errors": tally.errors, "accuracy": tally.accuracy,
                "answer_prob": tally.answer_prob,
                "sparsity": tally.sparsity, "visual_sparsity": tally.visual_sparsity,
                "prefill_s_mean": tally.prefill_s, "device": row["device"], "date": row["date"],
                "run_id": row["run_id"],
            })
    return out


def cells_path(board: str | Path) -> Path:
    """``vniah.csv`` -> ``vniah_cells.csv`` beside it."""
    path = Path(board)
    return path.with_name(f"{path.stem}_cells{path.suffix}")


def write_rows(board: str | Path, row: dict, cells: list[dict]) -> None:
    """Add (or replace) a run's leaderboard row and its cell rows (atomic rewrites)."""
    lb.upsert_rows(board, [row], columns=VNIAH_COLUMNS, key=VNIAH_KEY)
    lb.upsert_rows(cells_path(board), cells, columns=CELL_COLUMNS, key=CELL_KEY)


def heatmap_path(board: str | Path, row: dict) -> Path:
    """Where a run's heatmap goes: ``vniah_<model>_<method>-<setting>.png`` beside the CSV."""
    from .settings import slugify

    name = f"{Path(board).stem}_{slugify(row['model'])}_{slugify(row['method'])}-{slugify(row['setting'])}.png"
    return Path(board).with_name(name)


def heatmap(path: str | Path, grid: Grid, spec, row: dict) -> Path:
    """Draw accuracy over (haystack length x depth) to a PNG; returns its path."""
    import numpy as np

    from .plots import _figure, _save

    lengths, depths = list(spec.lengths), list(spec.depths)
    acc = np.full((len(depths), len(lengths)), np.nan)
    for j, length in enumerate(lengths):
        for i, depth in enumerate(depths):
            value = grid.cells.get((length, depth), Tally()).accuracy
            if value is not None:
                acc[i, j] = value
    fig = _figure(1.2 + 1.1 * len(lengths), 1.4 + 0.55 * len(depths))
    ax = fig.add_subplot()
    image = ax.imshow(acc, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            text = "-" if np.isnan(acc[i, j]) else f"{acc[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [f"{L}\n({spec.visual_tokens(L)})" for L in lengths], fontsize=8)
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=8)
    ax.set_xlabel("haystack length: frames (visual tokens)")
    ax.set_ylabel("needle depth")
    sparsity = row.get("sparsity")
    title = f"{row['method']}/{row['setting']}  acc {_fmt(row.get('acc_overall'))}  sparsity {_fmt(sparsity)}"
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    return _save(fig, Path(path))


def _fmt(value) -> str:
    return "-" if value is None or value == "" else f"{float(value):.3f}"


def table(rows: Sequence[dict]) -> str:
    """A plain-text table of a run's rows: accuracy per length, overall, worst cell, the right letter's
    probability share, sparsity."""
    header = ["method", "setting", "acc by length (frames:acc)", "overall", "min cell", "p(right)", "sparsity",
              "visual", "prefill s"]
    lines = [header]
    for r in rows:
        lines.append([
            str(r["method"]), str(r["setting"]), str(r["acc_by_length"]), _fmt(r["acc_overall"]),
            _fmt(r["acc_min_cell"]), _fmt(r.get("answer_prob")), _fmt(r["sparsity"]), _fmt(r["visual_sparsity"]),
            _fmt(r["prefill_s_mean"]),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
