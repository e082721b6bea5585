"""Candidate PSA defaults, the launch order of the attention kernel, and where planning time goes, in one process.

Run on a GPU from the repository root: python notes/ab/defaults_ab.py [--lengths ...] [--seeds ...]

1. Planning stages (device time, host ahead): layout, estimate, level assignment, plan compilation, whole plan.
2. Launch order (``pyramid.GRID_HEADS_FIRST``): the all-level-1 plan against cuDNN, both orders, same inputs.
3. Candidate PSA settings, plan + kernel against cuDNN and the relative L2 error against dense, on four input
   families and seeds the pareto results do not use (CSV to --csv).
"""

import argparse
import csv

import torch

from vlmsparse.bench.common import device_time_ms, environment, sdpa_dense, time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import pyramid as pyr_mod
from vlmsparse.kernels.plan_lists import compile_plan
from vlmsparse.methods import get_method
from vlmsparse.methods.selection import cumulative_levels

CANDIDATES = {
    "public-s8 (old default)": dict(thresholds=(0.7, 0.8, 0.9, 0.9), stride=8),
    "public-s16": dict(thresholds=(0.7, 0.8, 0.9, 0.9), stride=16),
    "x0.7-s16 (0.7,0.7,0.85,0.95)": dict(thresholds=(0.7, 0.7, 0.85, 0.95), stride=16),
    "x0.65-s16 (0.65,0.65,0.82,0.94)": dict(thresholds=(0.65, 0.65, 0.82, 0.94), stride=16),
    "x0.6-s16 (0.6,0.6,0.8,0.93) (new default)": dict(thresholds=(0.6, 0.6, 0.8, 0.93), stride=16),
    "xattention default": dict(name="xattention"),
}


def inputs(length, family, seed):
    frames, h, w = VIDEO_GRIDS.get(length, (length // 256, 16, 16))
    return video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16, seed=1000 * seed + length + 7,
                     **FAMILIES[family])


def stages(lengths):
    for length in lengths:
        q, k, v, visual = inputs(length, "medium", 0)
        cudnn = sdpa_dense("cudnn")
        t_dense = time_ms(lambda: cudnn(q, k, v))
        for stride in (8, 16):
            m = get_method("psa", stride=stride)
            cfg = m.config
            b, hq, lq, _ = q.shape
            lay = m.layout(visual, b, lq, k.shape[2], q.device, None)
            share = m.importance(q, k, lay)

            def select():
                return cumulative_levels(share, lay.forced[:, None], lay.free[:, None], cfg.thresholds,
                                         levels=(1, 2, 4, 8), mode=cfg.mode, forced_level=1, lone_level2_exact=True)

            levels = select()
            parts = {
                "layout": lambda: m.layout(visual, b, lq, k.shape[2], q.device, None),
                "estimate": lambda: m.importance(q, k, lay),
                "select": select,
                "compile": lambda: compile_plan(levels, lq, lq, 128, 128, True),
                "plan": lambda: m.plan(q, k, visual),
            }
            msg = " ".join(f"{n} {device_time_ms(f) * 1e3:.0f} us" for n, f in parts.items())
            print(f"stages L={lq} stride={stride} dense {t_dense * 1e3:.0f} us: {msg} "
                  f"(plan eager {time_ms(parts['plan']) * 1e3:.0f} us)", flush=True)


def grid_order(lengths):
    cudnn = sdpa_dense("cudnn")
    for length in lengths:
        q, k, v, visual = inputs(length, "medium", 0)
        n = -(-q.shape[2] // 128)
        ones = torch.ones(1, 28, n, n, dtype=torch.int8, device="cuda").tril()
        psa = get_method("psa")
        plan = psa.plan(q, k, visual)
        res = {}
        outs = []
        for order in (False, True):
            pyr_mod.GRID_HEADS_FIRST = order
            outs.append((pyr_mod.pyramid_attention(q, k, v, ones, check_levels=False), plan.run(q, k, v)))
        print(f"grid L={q.shape[2]}: outputs equal across orders: "
              f"{bool(torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]))}", flush=True)
        for _ in range(2):
            for order in (False, True):
                pyr_mod.GRID_HEADS_FIRST = order
                t1 = time_ms(lambda: pyr_mod.pyramid_attention(q, k, v, ones, check_levels=False))
                tp = time_ms(lambda: plan.run(q, k, v))
                td = time_ms(lambda: cudnn(q, k, v))
                res.setdefault(order, []).append((t1, tp, td))
        pyr_mod.GRID_HEADS_FIRST = None
        for order, ts in res.items():
            t1 = min(t[0] for t in ts)
            tp = min(t[1] for t in ts)
            td = min(t[2] for t in ts)
            print(f"grid L={q.shape[2]} heads_first={order}: all-level-1 {t1 * 1e3:.0f} us ({td / t1:.3f} of cuDNN "
                  f"{td * 1e3:.0f} us), psa default plan {tp * 1e3:.0f} us", flush=True)


def candidates(lengths, seeds, families, out_csv):
    cudnn = sdpa_dense("cudnn")
    env = environment()
    rows = []
    for length in lengths:
        for family in families:
            for seed in seeds:
                q, k, v, visual = inputs(length, family, seed)
                dense = cudnn(q, k, v)
                t_dense = time_ms(lambda: cudnn(q, k, v))
                for label, kw in CANDIDATES.items():
                    kw = dict(kw)
                    m = get_method(kw.pop("name", "psa"), **kw)
                    plan = m.plan(q, k, visual)
                    out = plan.run(q, k, v)
                    err = float((out.double() - dense.double()).norm() / dense.double().norm())
                    t_plan = time_ms(lambda: m.plan(q, k, visual))

                    def layer():
                        return m.plan(q, k, visual).run(q, k, v)

                    t_total = time_ms(layer)
                    sp = plan.sparsity().overall
                    rows.append(dict(env, L=q.shape[2], family=family, seed=seed, setting=label, sparsity=sp,
                                     dense_ms=t_dense, plan_ms=t_plan, time_ms=t_total,
                                     ratio_to_dense=t_dense / t_total, rel_error=err))
                    print(f"cand L={q.shape[2]} {family} s{seed} {label}: sparsity {sp:.3f} plan {t_plan:.3f} ms "
                          f"({t_plan / t_dense:.3f} of dense) speed-up {t_dense / t_total:.3f}x err {err:.4f}",
                          flush=True)
                del q, k, v, dense
                torch.cuda.empty_cache()
                with open(out_csv, "w", newline="") as f:
                    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
                    wr.writeheader()
                    wr.writerows(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--families", nargs="+", default=["diffuse", "medium", "peaked", "mixed"])
    ap.add_argument("--parts", nargs="+", default=["stages", "grid", "candidates"])
    ap.add_argument("--csv", default="defaults_ab.csv")
    a = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    if "stages" in a.parts:
        stages([8192, 32768])
    if "grid" in a.parts:
        grid_order([8192, 32768])
    if "candidates" in a.parts:
        candidates(a.lengths, a.seeds, a.families, a.csv)


if __name__ == "__main__":
    main()
