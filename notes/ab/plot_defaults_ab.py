"""Plot of the candidate-default A/B (results/defaults_ab.csv): error against speed-up over cuDNN, one panel per
input family, one marker per candidate, one point per length and seed. python notes/ab/plot_defaults_ab.py CSV PNG"""

import csv
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

rows = list(csv.DictReader(open(sys.argv[1])))
families = sorted({r["family"] for r in rows})
settings = list(dict.fromkeys(r["setting"] for r in rows))
markers = "os^vDPX*"
fig = Figure(figsize=(4.2 * len(families), 4.2), dpi=110, layout="constrained")
FigureCanvasAgg(fig)
axes = fig.subplots(1, len(families), squeeze=False)[0]
for ax, family in zip(axes, families):
    for i, s in enumerate(settings):
        pts = [(float(r["ratio_to_dense"]), float(r["rel_error"]), r["L"]) for r in rows
               if r["family"] == family and r["setting"] == s]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], s=22, label=s)
    ax.axvline(1.0, color="#999999", lw=0.8)
    ax.axvline(1.3, color="#999999", lw=0.8, ls=":")
    ax.set_title(f"{family} (8k, 16k, 32k; seeds {', '.join(sorted({r['seed'] for r in rows}))})", fontsize=9)
    ax.set_xlabel("plan + kernel speed-up over cuDNN")
    ax.set_ylabel("relative L2 error")
axes[0].legend(fontsize=7)
r0 = rows[0]
fig.suptitle(f"PSA default candidates, {r0['device']}, torch {r0['torch']}, triton {r0['triton']}, {r0['date']}",
             fontsize=9)
fig.savefig(sys.argv[2])
print("wrote", sys.argv[2])
