"""Plot of a pooled block's marginal cost per version, from the same-run A/Bs in results/tail_ab.csv: for each run
(one `timing` value and length) that timed the one-level plans 0 and 1, every version's (t_p - t_0) / (t_1 - t_0) for
the levels it timed, against the target 1.25 / p. One panel per length.

python notes/ab/plot_marginal.py results/tail_ab.csv results/marginal_costs.png [--date 2026-12-04]
"""

import argparse
import collections
import csv

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def marginal_costs(rows, date=None):
    """``{length: [(version, run, {level: cost})]}`` from the rows of each (run, length, version) that has levels 0, 1."""
    times = collections.defaultdict(dict)
    for r in rows:
        if (date and r["date"] != date) or not r["plan"].startswith("one level") or not r["ms"]:
            continue
        times[r["timing"], int(r["length"]), r["version"]][int(r["plan"].split()[-1])] = float(r["ms"])
    out = collections.defaultdict(list)
    for (run, length, version), t in times.items():
        if 0 in t and 1 in t and len(t) > 2:
            exact = t[1] - t[0]
            out[length].append((version, run, {p: (t[p] - t[0]) / exact for p in (2, 4, 8) if p in t}))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--date", help="only the rows of this date (YYYY-MM-DD)")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.csv, newline="")))
    costs = marginal_costs(rows, args.date)
    if not costs:
        raise SystemExit(f"{args.csv}: no run with one-level plans 0, 1 and a pooled level" +
                         (f" on {args.date}" if args.date else ""))
    lengths = sorted(costs)
    fig = Figure(figsize=(5.2 * len(lengths), 5.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    versions = list(dict.fromkeys(v for length in lengths for v, _, _ in costs[length]))
    markers = "osD^vPX*<>"
    for ax, length in zip(axes, lengths):
        for p in (2, 4, 8):
            ax.hlines(1.25 / p, p / 1.25, p * 1.25, color="#444444", lw=1.2)
            ax.hlines(1.0 / p, p / 1.25, p * 1.25, color="#aaaaaa", lw=0.8, ls=":")
        for i, version in enumerate(versions):
            pts = [(p, c) for v, _, cs in costs[length] if v == version for p, c in cs.items()]
            if pts:
                ax.scatter([p * (1 + 0.04 * (i - len(versions) / 2)) for p, _ in pts], [c for _, c in pts],
                           marker=markers[i % len(markers)], color=f"C{i % 10}", s=24, label=version)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks([2, 4, 8], ["level 2", "level 4", "level 8"])
        ticks = [0.125, 0.156, 0.25, 0.3125, 0.5, 0.625]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("pooling level (solid: target 1.25/p, dotted: share 1/p)")
        ax.set_ylabel("marginal cost of a block (exact = 1)")
        ax.set_title(f"{length} tokens", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=1, fontsize=7)
    r0 = rows[0]
    fig.suptitle(f"Pooled block cost, same-run device-time A/Bs ({args.date or 'all dates'}), {r0['device']}, "
                 f"{r0['shapes']}", fontsize=8)
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
