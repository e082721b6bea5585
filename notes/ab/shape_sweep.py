"""Pareto sweep of PSA threshold shapes (exact blocks up to tau, pooled levels for shares of the mass left,
lone pooled blocks exact, tail key) against XAttention on one kernel (CUDA GPU).

A shape ``(f4, f8)`` gives thresholds ``(tau, tau, 1 - f4 (1 - tau), 1 - f8 (1 - tau))``: level 4 takes the
next ``1 - f4`` of the mass left after the exact blocks, level 8 up to ``1 - f8`` of it. Runs
``vlmsparse.bench.pareto.run`` on these lines (plus ``xattention`` and ``psa-exact-tail`` on the sweep's tau grid).

    python notes/ab/shape_sweep.py --lengths 16384 --families peaked --seeds 2 4 --out /tmp/shapes
"""
import argparse

from vlmsparse.bench import pareto
from vlmsparse.bench.common import add_output_arguments

SHAPES = {"l8-0": (1.0, 0.0), "l8-10": (1.0, 0.1), "l8-20": (1.0, 0.2), "l8-35": (1.0, 0.35), "l48": (0.6, 0.3)}
TAUS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)


def settings(shapes):
    out = [s for s in pareto.default_settings() if s.label in ("xattention", "psa-exact-tail")]
    for name in shapes:
        f4, f8 = SHAPES[name]
        for tau in TAUS:
            t = (tau, tau, round(1 - f4 * (1 - tau), 4), round(1 - f8 * (1 - tau), 4))
            out.append(pareto.Setting(f"psa-{name}", "psa", f"thresholds={list(t)},stride=16,lone_pooled=exact,tail=True",
                                      (("thresholds", t), ("stride", 16), ("lone_pooled", "exact"), ("tail", True))))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[16384])
    p.add_argument("--families", nargs="+", default=["peaked"])
    p.add_argument("--seeds", type=int, nargs="+", default=[2])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--recall-rows", type=int, default=64)
    add_output_arguments(p, "shapes")
    args = p.parse_args()
    sts = settings(args.shapes)
    pareto.default_settings = lambda: sts
    args.lines = sorted({s.label for s in sts})
    pareto.PSA_LINES = tuple(x for x in args.lines if x != "xattention")
    raise SystemExit(pareto.run(args))
