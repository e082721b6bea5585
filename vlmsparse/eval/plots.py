"""Plots (PNG, matplotlib) of a run folder, written beside its CSVs: ``python -m vlmsparse.eval plot RUN_DIR``.

- ``accuracy_vs_sparsity.png`` from the leaderboard (``videomme.csv``): accuracy on the short, medium and long
  splits and overall against achieved sparsity, one colour per method (settings of a method joined by a line),
  with the PSA paper's reported rows as hollow markers;
- ``layer_sparsity.png`` from the records (``runs/**/records.jsonl``, field ``layer_sparsity``): sparsity per
  decoder layer, averaged over a run's questions, one line per run (``dense`` is 0 everywhere and not drawn);
- ``pareto.png`` from the speed benchmark's CSV (``pareto.csv`` of ``python -m vlmsparse.bench pareto``: device,
  shapes, family, line / method, knob, seed, dense_ms, time_ms, ratio_to_dense, rel_error, ...): relative error
  against speed-up over dense attention, one line per method line and input family (knob settings averaged
  over seeds), one panel per device and shapes. The benchmark draws it with this module too.

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
from .reported import PSA_PAPER_VIDEOMME, REPORTED_SOURCE
from .videomme import DURATIONS

__all__ = [
    "ACCURACY_PNG",
    "LAYERS_PNG",
    "PARETO_PNG",
    "plot_accuracy_vs_sparsity",
    "plot_layer_sparsity",
    "plot_pareto",
    "plot_vniah",
    "plot_run",
    "speedup",
    "main",
]

ACCURACY_PNG = "accuracy_vs_sparsity.png"
LAYERS_PNG = "layer_sparsity.png"
PARETO_PNG = "pareto.png"
VNIAH_CSV = "vniah.csv"
VNIAH_PNG = "vniah.png"
FIDELITY_CSV = "testbed_fidelity.csv"
LEADERBOARD_CSV = "videomme.csv"
PARETO_CSV = "pareto.csv"
BENCH_FIDELITY_CSV = "fidelity.csv"
BENCH_FIDELITY_PNG = "fidelity.png"
#: Colours and markers per method, so a method looks the same in every figure.
STYLE = {
    "dense": ("#444444", "s"),
    "psa": ("#d62728", "o"),
    "psa-all-levels": ("#ff9896", "o"),
    "psa-public": ("#8c564b", "P"),
    "psa-exact": ("#8b0a50", "v"),
    "psa-exact-lone-exact-tail": ("#ff7f0e", "s"),
    "psa-exact-tail": ("#9467bd", "X"),
    "xattention": ("#1f77b4", "^"),
    "sparge": ("#2ca02c", "D"),
}
_OTHER_COLOURS = ("#e377c2", "#bcbd22", "#17becf", "#7f7f7f", "#aec7e8")
#: Line styles per input family of the speed benchmark (how concentrated attention is).
FAMILY_LINES = {"diffuse": ":", "medium": "-", "peaked": "--", "mixed": "-."}


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


def _panels(n: int, cols: int, width: float, height: float):
    """A figure of ``n`` panels, ``cols`` a row at most (each ``width`` x ``height`` inches, plus a legend column):
    ``(figure, the n axes, the unused axes)``."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig = _figure(width * cols + 1.8, height * rows)
    axes = list(fig.subplots(rows, cols, squeeze=False).flatten())
    return fig, axes[:n], axes[n:]


def _finish_panels(fig, axes, unused, title: str) -> None:
    """Hide the unused panels, put one legend of every panel's lines beside the figure and the title above it."""
    for ax in unused:
        ax.set_visible(False)
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=7)
    fig.suptitle(title, fontsize=9)


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
        title += f"; hollow markers: {REPORTED_SOURCE}"
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
def speedup(row: dict) -> float | None:
    """Speed-up over dense attention of one speed-CSV row: ``dense_ms / time_ms`` where both are given, else
    ``ratio_to_dense`` (which ``python -m vlmsparse.bench pareto`` writes as dense time / time)."""
    dense, time_ms = _float(row.get("dense_ms")), _float(row.get("time_ms"))
    if dense and time_ms and dense > 0 and time_ms > 0:
        return dense / time_ms
    ratio = _float(row.get("ratio_to_dense"))
    return ratio if ratio and ratio > 0 else None


def _shapes(row: dict) -> str:
    if row.get("shapes"):
        return str(row["shapes"])
    return " ".join(f"{k}={row[k]}" for k in ("L", "Hq", "Hkv", "D", "dtype") if row.get(k) not in (None, ""))


def plot_pareto(rows: Sequence[dict], path: str | Path) -> Path:
    """Relative error against speed-up over dense, one line per method line and input family, one panel per
    device and shapes; points of one knob setting are averaged over seeds. Returns the PNG path."""
    panels: dict[tuple[str, str], dict[tuple[str, str], dict[str, list[tuple[float, float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        up, err = speedup(row), _float(row.get("rel_error"))
        if up is None or err is None:
            continue
        line = str(row.get("line") or row.get("method", ""))
        panel = panels[(str(row.get("device", "")), _shapes(row))]
        panel[(line, str(row.get("family", "")))][str(row.get("knob", ""))].append((up, err))
    if not panels:
        raise ValueError("no row with a speed-up (dense_ms and time_ms, or ratio_to_dense) and rel_error to draw")
    fig, axes, unused = _panels(len(panels), 3, 4.8, 4.0)
    for ax, ((device, shapes), lines) in zip(axes, sorted(panels.items())):
        positive = True
        for (line, family), knobs in sorted(lines.items()):
            xy = sorted((sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)) for pts in knobs.values())
            positive = positive and all(y > 0 for _, y in xy)
            colour, marker = _style(line)
            ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, color=colour,
                    linestyle=FAMILY_LINES.get(family, "-"), label=f"{line} / {family}" if family else line,
                    linewidth=1.2, markersize=3)
        ax.axvline(1.0, color="#888888", linewidth=0.8)
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("speed-up over dense attention (x)")
        ax.set_ylabel("relative L2 error vs dense")
        ax.set_title(f"{device}, {shapes}", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    _finish_panels(fig, axes, unused, "Speed vs error, mean over seeds (lower right is better)")
    return _save(fig, Path(path))


#: Markers of the fidelity sweep's knobs, so two knobs of one method are told apart.
_KNOB_MARKERS = {"exact_share": "o", "threshold_scale": "s", "preset": "*", "threshold": "^", "cdf_threshold": "D"}


def plot_fidelity(rows: Sequence[dict], path: str | Path) -> Path:
    """Relative L2 error against sparsity from ``bench fidelity`` rows: one panel per input (a generated length,
    or a captured layer) and device, one line per method and knob (with tail aggregation apart), the knob's
    settings as the points. Returns the PNG path."""
    panels: dict[tuple[str, str], dict[tuple[str, str, str], list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        sp, err = _float(row.get("sparsity")), _float(row.get("rel_l2_error"))
        method = str(row.get("method", ""))
        if sp is None or err is None or method == "dense":
            continue
        source = str(row.get("input") or "synthetic")
        title = f"{source}, L={row.get('seq_len', '')}" if source == "synthetic" else source
        tail = str(row.get("tail", "")).lower() in ("true", "1")
        knob = str(row.get("knob") or "")
        words = str(row.get("setting") or method).split()
        others = [w for w in words if not w.startswith(f"{knob}=")]  # the setting's fixed fields name its line
        line = " ".join([*others, knob]) if len(others) < len(words) else f"{method} {knob}"
        label = line.strip() + (" + tail" if tail else "")
        panels[(title, f"{row.get('device', '')} {row.get('backend', '')}")][(label, method, knob)].append((sp, err))
    if not panels:
        raise ValueError("no fidelity row with a sparsity and a rel_l2_error to draw")
    fig, axes, unused = _panels(len(panels), 4, 4.0, 3.4)
    for ax, ((title, device), lines) in zip(axes, sorted(panels.items())):
        floor = min((y for pts in lines.values() for _, y in pts if y > 0), default=1e-6)
        for (label, method, knob), pts in sorted(lines.items()):
            colour, marker = _style(method)
            pts.sort()
            ax.plot([x for x, _ in pts], [max(y, floor / 2) for _, y in pts], marker=_KNOB_MARKERS.get(knob, marker),
                    color=colour, linestyle="--" if label.endswith("tail") else "-", label=label, linewidth=1.1,
                    markersize=4)
        ax.set_yscale("log")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("relative L2 error vs dense")
        ax.set_title(f"{title}\n{device}", fontsize=7)
        ax.grid(alpha=0.3, which="both")
    _finish_panels(fig, axes, unused,
                   "Attention error vs sparsity per input (lower right is better; zero errors drawn at the floor)")
    return _save(fig, Path(path))


# -- a run folder ------------------------------------------------------------------------------------------
# -- needle in a haystack -------------------------------------------------------------------------------------


def plot_vniah(rows: Sequence[dict], path: str | Path, fidelity: Sequence[dict] = ()) -> Path:
    """Needle accuracy (overall; hollow: the worst length x depth cell) against visual sparsity from ``vniah.csv``
    rows, one line per model and method; with ``fidelity`` rows (``python -m vlmsparse.testbed fidelity``), a second
    panel: each setting's relative L2 attention error on the model's own q/k/v against its sparsity, averaged over
    layers and samples. Returns the PNG path."""
    lines: dict[tuple[str, str], list[tuple[float, float, float | None]]] = defaultdict(list)
    for row in rows:
        x = _float(row.get("visual_sparsity"))
        x = _float(row.get("sparsity")) if x is None else x
        acc = _float(row.get("acc_overall"))
        if x is None or acc is None:
            continue
        method = str(row.get("method", "")) + (" (no needle)" if "no needle" in str(row.get("haystack", "")) else "")
        lines[(str(row.get("model", "")), method)].append((x, acc, _float(row.get("acc_min_cell"))))
    if not lines:
        raise ValueError("no vniah row with an accuracy and a sparsity to draw")
    fig = _figure(5.2 * (2 if fidelity else 1), 3.8)
    axes = fig.subplots(1, 2 if fidelity else 1, squeeze=False)[0]
    ax = axes[0]
    several_models = len({model for model, _ in lines}) > 1
    for (model, method), pts in sorted(lines.items()):
        colour, marker = _style(method.split(" ")[0])
        pts.sort()
        label = f"{method} ({Path(model).name or model})" if several_models else method
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, label=label, linewidth=1.2,
                linestyle=":" if method.endswith("(no needle)") else "-")
        worst = [(p[0], p[2]) for p in pts if p[2] is not None]
        ax.plot([w[0] for w in worst], [w[1] for w in worst], marker=marker, markerfacecolor="none", color=colour,
                linestyle="none")
    ax.set_xlabel("visual sparsity")
    ax.set_ylabel("accuracy (hollow: worst length x depth cell)")
    ax.set_xlim(-0.03, 1.0)
    ax.set_ylim(-0.03, 1.03)
    ax.axhline(0.25, color="grey", linewidth=0.8, linestyle=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("needle accuracy vs sparsity (dotted: chance)", fontsize=9)
    if fidelity:
        ax = axes[1]
        by_setting: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for row in fidelity:
            sp, err = _float(row.get("sparsity")), _float(row.get("rel_l2_error"))
            if sp is not None and err is not None:
                by_setting[(str(row.get("method", "")), str(row.get("setting", "")))].append((sp, err))
        labelled: set[str] = set()
        for (method, setting), pts in sorted(by_setting.items()):
            colour, marker = _style(method)
            x, y = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
            ax.plot([x], [y], marker=marker, color=colour, linestyle="none", label=None if method in labelled else method)
            labelled.add(method)
            ax.annotate(setting, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("sparsity (mean over layers and samples)")
        ax.set_ylabel("relative L2 attention error")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("per-layer attention error on the model's own q/k/v", fontsize=9)
    return _save(fig, Path(path))


def plot_run(
    run_dir: str | Path, *, pareto_csv: str | Path | None = None, reported: bool = True, speed: bool = True
) -> list[Path]:
    """Every plot the folder's files allow, written into ``run_dir``; returns the PNG paths (maybe none).

    ``speed=False`` leaves the speed vs error figure alone (the harness redraws only its own figures).
    """
    root = Path(run_dir)
    written: list[Path] = []
    rows = read_rows(root / LEADERBOARD_CSV)
    if any(_float(r.get("sparsity")) is not None for r in rows):
        written.append(plot_accuracy_vs_sparsity(rows, root / ACCURACY_PNG, reported=reported))
    by_run = layer_sparsity_by_run(root / "runs") if (root / "runs").is_dir() else {}
    if by_run:
        written.append(plot_layer_sparsity(by_run, root / LAYERS_PNG))
    vniah_rows = read_rows(root / VNIAH_CSV)
    if vniah_rows:
        written.append(plot_vniah(vniah_rows, root / VNIAH_PNG, read_rows(root / FIDELITY_CSV)))
    fidelity_rows = read_rows(root / BENCH_FIDELITY_CSV)
    if any(_float(r.get("rel_l2_error")) is not None and r.get("method") != "dense" for r in fidelity_rows):
        written.append(plot_fidelity(fidelity_rows, root / BENCH_FIDELITY_PNG))
    pareto = Path(pareto_csv) if pareto_csv is not None else root / PARETO_CSV
    pareto_rows = read_rows(pareto) if speed else []
    if any(speedup(r) is not None for r in pareto_rows):
        written.append(plot_pareto(pareto_rows, root / PARETO_PNG))
    return written


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m vlmsparse.eval plot RUN_DIR [--pareto CSV]``; returns the exit code."""
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m vlmsparse.eval plot",
        description="Draw the plots (PNG) of a run folder, beside its CSVs: accuracy vs sparsity (videomme.csv, and "
        "vniah.csv with testbed_fidelity.csv), sparsity per layer (runs/**/records.jsonl) and speed vs error "
        "(pareto.csv).",
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
        print(f"error: nothing to plot in {root}: it has no {LEADERBOARD_CSV} or vniah.csv rows, no records with per-layer "
              f"sparsity and no {PARETO_CSV}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
