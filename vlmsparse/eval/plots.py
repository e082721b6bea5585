"""Plots (PNG, matplotlib) of a run folder, written beside its CSVs: ``python -m vlmsparse.eval plot RUN_DIR``.

- ``accuracy_vs_sparsity.png`` from the leaderboard (``videomme.csv``): accuracy on the short, medium and long
  splits and overall against achieved sparsity, one colour per method (settings of a method joined by a line),
  with the PSA paper's reported rows as hollow markers;
- ``layer_sparsity.png`` from the records (``runs/**/records.jsonl``, field ``layer_sparsity``): sparsity per
  decoder layer, averaged over a run's questions, one line per run (``dense`` is 0 everywhere and not drawn);
- ``pareto.png`` from a speed benchmark CSV (``pareto.csv``: device, shapes, family, method, knob, sparsity,
  time_ms, ratio_to_dense, rel_error, recall): relative error against speed-up over dense attention, one line
  per method and input family, one panel per device and shapes.

Figures are drawn on matplotlib's Agg canvas without pyplot, so nothing here touches a notebook's backend.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from .leaderboard import read_rows
from .records import iter_jsonl
from .reference import PSA_PAPER_VIDEOMME, REFERENCE_SOURCE
from .videomme import DURATIONS

__all__ = [
    "ACCURACY_PNG",
    "LAYERS_PNG",
    "PARETO_PNG",
    "plot_accuracy_vs_sparsity",
    "plot_layer_sparsity",
    "plot_pareto",
    "plot_run",
    "main",
]

ACCURACY_PNG = "accuracy_vs_sparsity.png"
LAYERS_PNG = "layer_sparsity.png"
PARETO_PNG = "pareto.png"
LEADERBOARD_CSV = "videomme.csv"
PARETO_CSV = "pareto.csv"
#: Colours and markers per method, so a method looks the same in every figure.
STYLE = {
    "dense": ("#444444", "s"),
    "psa": ("#d62728", "o"),
    "xattention": ("#1f77b4", "^"),
    "sparge": ("#2ca02c", "D"),
}
_OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e")
_FAMILY_LINES = ("-", "--", ":", "-.")


def _style(method: str) -> tuple[str, str]:
    if method in STYLE:
        return STYLE[method]
    return _OTHER_COLOURS[sum(map(ord, method)) % len(_OTHER_COLOURS)], "v"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _float(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# -- accuracy vs sparsity ----------------------------------------------------------------------------------
def plot_accuracy_vs_sparsity(rows: Sequence[dict], path: str | Path, *, reported: bool = True) -> Path:
    """Accuracy per duration (and overall) against sparsity, from leaderboard rows; returns the PNG path."""
    points = []  # (model, method, setting, sparsity, {column: accuracy})
    for row in rows:
        sparsity = _float(row.get("sparsity"))
        if sparsity is None:
            continue
        acc = {c: _float(row.get(f"acc_{c}")) for c in (*DURATIONS, "overall")}
        points.append((str(row.get("model", "")), str(row.get("method", "")), str(row.get("setting", "")), sparsity, acc))
    if not points:
        raise ValueError("no leaderboard row with a sparsity to draw")
    several_models = len({p[0] for p in points}) > 1
    fig = _figure(13, 3.6)
    axes = fig.subplots(1, 4, sharey=True)
    for ax, column in zip(axes, (*DURATIONS, "overall")):
        groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for model, method, _setting, sparsity, acc in points:
            if acc[column] is not None:
                groups[(model, method)].append((sparsity, acc[column]))
        for (model, method), xy in sorted(groups.items()):
            xy.sort()
            colour, marker = _style(method)
            label = f"{method} ({Path(model).name or model})" if several_models else method
            ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, color=colour, label=label, linewidth=1.2)
        if reported:
            for ref in PSA_PAPER_VIDEOMME:
                colour, marker = _style(ref.method)
                ax.plot([ref.sparsity], [getattr(ref, column)], marker=marker, color=colour, markerfacecolor="none",
                        linestyle="none", markersize=8, label=f"{ref.label} (paper)")
        ax.set_title(column)
        ax.set_xlabel("sparsity (overall)")
        ax.set_xlim(-0.03, 1.0)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    title = "Video-MME accuracy vs achieved sparsity"
    if reported:
        title += f"; hollow markers: {REFERENCE_SOURCE}"
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


# -- per-layer sparsity ------------------------------------------------------------------------------------
def layer_sparsity_by_run(run_root: str | Path) -> dict[str, list[float]]:
    """Mean sparsity per decoder layer over each run's answered questions: ``{"method/setting": [layer 0, ...]}``.

    ``run_root`` is a folder holding ``runs/`` (or ``runs/`` itself); runs without per-layer figures (``dense``,
    records written before the field existed) are left out.
    """
    root = Path(run_root)
    out: dict[str, list[float]] = {}
    for records_file in sorted(root.rglob("records.jsonl")):
        sums: list[float] = []
        counts: list[int] = []
        name = None
        for record in iter_jsonl(records_file):
            layers = record.get("layer_sparsity")
            if not layers:
                continue
            name = f"{record.get('method')}/{record.get('setting')}"
            for i, value in enumerate(layers):
                if value is None:
                    continue
                while len(sums) <= i:
                    sums.append(0.0)
                    counts.append(0)
                sums[i] += float(value)
                counts[i] += 1
        if name is not None:
            label = name if name not in out else f"{name} ({records_file.parent.name})"
            out[label] = [s / c if c else math.nan for s, c in zip(sums, counts)]
    return out


def plot_layer_sparsity(by_run: dict[str, list[float]], path: str | Path) -> Path:
    """Sparsity per decoder layer, one line per run (from :func:`layer_sparsity_by_run`); returns the PNG path."""
    if not by_run:
        raise ValueError("no record with per-layer sparsity to draw (dense runs have none)")
    fig = _figure(7, 3.8)
    ax = fig.subplots()
    for name, values in by_run.items():
        colour, marker = _style(name.split("/")[0])
        ax.plot(range(len(values)), values, marker=marker, color=colour, label=name, linewidth=1.2)
    layers = max(len(v) for v in by_run.values())
    ax.set_xticks(range(layers) if layers <= 32 else range(0, layers, 4))
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("sparsity (mean over questions)")
    ax.set_ylim(-0.03, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Sparsity per layer (dense: 0 everywhere, not drawn)", fontsize=9)
    return _save(fig, Path(path))


# -- speed vs error ----------------------------------------------------------------------------------------
def speedups(rows: Sequence[dict]) -> list[float | None]:
    """Speed-up over dense attention of each row of a speed CSV (``time_ms``, ``ratio_to_dense``).

    ``ratio_to_dense`` relates a row's time to dense attention's on the same inputs, either as time / dense or
    as dense / time. Within rows that share a device, shapes and family the dense time is one number, so the
    reading under which ``time_ms`` and ``ratio_to_dense`` imply the same dense time for every row is taken
    (``time / dense`` when a group has a single time and cannot tell).
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row.get("device"), row.get("shapes"), row.get("family"))].append(i)
    out: list[float | None] = [None] * len(rows)
    for members in groups.values():
        pairs = [(i, _float(rows[i].get("time_ms")), _float(rows[i].get("ratio_to_dense"))) for i in members]
        pairs = [(i, t, r) for i, t, r in pairs if t and r and t > 0 and r > 0]
        if not pairs:
            continue

        def spread(values: list[float]) -> float:
            return (max(values) - min(values)) / max(values)

        as_time_ratio = spread([t / r for _, t, r in pairs])  # ratio = time / dense -> dense = time / ratio
        as_speedup = spread([t * r for _, t, r in pairs])  # ratio = dense / time -> dense = time * ratio
        time_over_dense = as_time_ratio <= as_speedup
        for i, _t, r in pairs:
            out[i] = 1.0 / r if time_over_dense else r
    return out


def plot_pareto(rows: Sequence[dict], path: str | Path) -> Path:
    """Relative error against speed-up over dense, one line per method and family (one panel per device and
    shapes); returns the PNG path."""
    ups = speedups(rows)
    panels: dict[tuple[str, str], dict[tuple[str, str], list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row, up in zip(rows, ups):
        err = _float(row.get("rel_error"))
        if up is None or err is None:
            continue
        panels[(str(row.get("device", "")), str(row.get("shapes", "")))][(str(row.get("method", "")), str(row.get("family", "")))].append((up, err))
    if not panels:
        raise ValueError("no row with time_ms, ratio_to_dense and rel_error to draw")
    families = sorted({fam for lines in panels.values() for _, fam in lines})
    n = len(panels)
    cols = min(n, 3)
    fig = _figure(4.6 * cols + 1.6, 3.8 * math.ceil(n / cols))
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).flatten()
    for ax, ((device, shapes), lines) in zip(axes, sorted(panels.items())):
        positive = all(e > 0 for xy in lines.values() for _, e in xy)
        for (method, family), xy in sorted(lines.items()):
            xy.sort()
            colour, marker = _style(method)
            style = _FAMILY_LINES[families.index(family) % len(_FAMILY_LINES)]
            ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, color=colour, linestyle=style,
                    label=f"{method}, {family}" if family else method, linewidth=1.2, markersize=4)
        ax.axvline(1.0, color="#888888", linewidth=0.8)
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("speed-up over dense attention (x)")
        ax.set_ylabel("relative L2 error vs dense")
        ax.set_title(f"{device}\n{shapes}", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    fig.suptitle("Speed vs error (lower right is better)", fontsize=9)
    return _save(fig, Path(path))


# -- a run folder ------------------------------------------------------------------------------------------
def plot_run(run_dir: str | Path, *, pareto_csv: str | Path | None = None, reported: bool = True) -> list[Path]:
    """Every plot the folder's files allow, written into ``run_dir``; returns the PNG paths (maybe none)."""
    root = Path(run_dir)
    written: list[Path] = []
    rows = read_rows(root / LEADERBOARD_CSV)
    if any(_float(r.get("sparsity")) is not None for r in rows):
        written.append(plot_accuracy_vs_sparsity(rows, root / ACCURACY_PNG, reported=reported))
    by_run = layer_sparsity_by_run(root / "runs") if (root / "runs").is_dir() else {}
    if by_run:
        written.append(plot_layer_sparsity(by_run, root / LAYERS_PNG))
    pareto = Path(pareto_csv) if pareto_csv is not None else root / PARETO_CSV
    pareto_rows = read_rows(pareto)
    if pareto_rows and any(u is not None for u in speedups(pareto_rows)):
        written.append(plot_pareto(pareto_rows, root / PARETO_PNG))
    return written


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m vlmsparse.eval plot RUN_DIR [--pareto CSV]``; returns the exit code."""
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m vlmsparse.eval plot",
        description="Draw the plots (PNG) of a run folder, beside its CSVs: accuracy vs sparsity (videomme.csv), "
        "sparsity per layer (runs/**/records.jsonl) and speed vs error (pareto.csv).",
        epilog="examples:\n  python -m vlmsparse.eval plot results\n"
        "  python -m vlmsparse.eval plot runs/demo-20261201-120000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder with videomme.csv, runs/ and/or pareto.csv")
    parser.add_argument("--pareto", metavar="CSV", default=None,
                        help="speed vs error CSV to draw (default: RUN_DIR/pareto.csv when it exists)")
    parser.add_argument("--no-reported", action="store_true", help="leave the PSA paper's reported rows out")
    args = parser.parse_args(list(argv) if argv is not None else None)
    root = Path(args.run_dir)
    if not root.is_dir():
        parser.error(f"{root}: no such folder; give a run folder (--out of python -m vlmsparse.eval, or results)")
    if args.pareto is not None and not Path(args.pareto).is_file():
        parser.error(f"--pareto {args.pareto}: no such file")
    written = plot_run(root, pareto_csv=args.pareto, reported=not args.no_reported)
    if not written:
        print(f"error: nothing to plot in {root}: it has no {LEADERBOARD_CSV} rows, no records with per-layer "
              f"sparsity and no {PARETO_CSV}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
