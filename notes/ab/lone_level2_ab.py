"""Same-run A/B of PSA's ``lone_level2_exact`` (a level-2 block without a level-2 neighbour kept exact) on the
pareto sweep's PSA lines, beside XAttention: plan + kernel time against SDPA (cuDNN), relative L2 error, and the
best error within each time budget per line. Run on a GPU from the repository root:
python notes/ab/lone_level2_ab.py --lengths 16384 32768 --seeds 0
"""

import argparse
import csv
import math
import os

import torch

from vlmsparse.bench.common import sdpa_dense, time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES, Setting, default_settings
from vlmsparse.bench.synthetic import video_qkv


def settings() -> list[Setting]:
    out = []
    for s in default_settings():
        if s.label in ("psa", "psa-all-levels"):
            out.append(s)
            out.append(Setting(s.label + "+lone", s.method, s.knob, s.overrides + (("lone_level2_exact", True),)))
        elif s.label == "xattention":
            out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    cudnn = sdpa_dense("cudnn")
    rows = []
    for length in args.lengths:
        frames, height, width = VIDEO_GRIDS[length]
        for family in ("diffuse", "medium", "peaked"):
            for seed in args.seeds:
                q, k, v, visual = video_qkv(frames, height, width, device="cuda", dtype=torch.bfloat16,
                                            seed=1000 * seed + length, **FAMILIES[family])
                dense = cudnn(q, k, v).double()
                t_dense = time_ms(lambda: cudnn(q, k, v))
                for s in settings():
                    method = s.build()
                    plan = method.plan(q, k, visual)
                    err = float((plan.run(q, k, v).double() - dense).norm() / dense.norm())
                    t = time_ms(lambda: method.plan(q, k, visual).run(q, k, v))
                    rows.append(dict(L=q.shape[2], family=family, seed=seed, line=s.label, knob=s.knob,
                                     sparsity=plan.sparsity().overall, ratio=t_dense / t, err=err))
                    r = rows[-1]
                    print(f"L={r['L']} {family} s{seed} {s.label:20s} {s.knob:40s} sparsity {r['sparsity']:.3f} "
                          f"{r['ratio']:.2f}x err {err:.4f}", flush=True)
                with open(os.path.join(args.out, "lone_level2_ab.csv"), "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
                del q, k, v, dense
                torch.cuda.empty_cache()
    print("best error within each budget (speed-up >= budget):")
    for key in sorted({(r["L"], r["family"], r["seed"]) for r in rows}):
        sub = [r for r in rows if (r["L"], r["family"], r["seed"]) == key]
        for budget in (1.1, 1.25, 1.5, 1.75, 2.0):
            best = {}
            for line in ("psa", "psa+lone", "psa-all-levels", "psa-all-levels+lone", "xattention"):
                errs = [r["err"] for r in sub if r["line"] == line and r["ratio"] >= budget]
                best[line] = min(errs) if errs else math.nan
            print(key, f"{budget}x", " ".join(f"{k}={v:.4f}" for k, v in best.items()), flush=True)


if __name__ == "__main__":
    main()
