"""The warp-specialized Hopper kernel (``kernel="ws"``) against the Triton kernel (``kernel="triton"``) and cuDNN.

Same plan lists, same pyramid, both kernels in one process, alternating rounds of device time (host ahead), best
of the rounds. Plans: every wholly visible block at one level (1, 2, 4, 8; sink and diagonal exact), random mixed
plans (keep 0.5 / 0.25 / 0.1, two seeds), XAttention-like binary plans, and PSA's default plan on the pareto
families (diffuse, medium, peaked; two seeds). Per plan: both times, their ratio, each against cuDNN, the outputs'
relative difference, and each kernel's error against the float64 reference on a sample of query rows.
Writes ``--csv`` (appends, with device, date and shapes).

Run on a Hopper GPU from the repository root: python notes/ab/ws_ab.py [--lengths ...] [--quick]
"""

import argparse
import csv
import datetime
import os

import torch
import triton

from vlmsparse.bench.common import device_time_ms, sdpa_dense
from vlmsparse.bench.kernel import VIDEO_GRIDS, one_level_plan, random_mixed_plan, rel_err
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels.reference import pyramid_attention_ref
from vlmsparse.methods import get_method

FIELDS = ["date", "device", "shapes", "length", "plan", "cudnn_ms", "triton_ms", "ws_ms", "ws_over_triton",
          "triton_vs_cudnn", "ws_vs_cudnn", "diff", "err_triton", "err_ws"]


def sampled_error(q, k, v, levels, out_a, out_b, rows=256):
    """Relative L2 error of two outputs against the float64 reference on the last ``rows`` queries (a
    bottom-right aligned sub-problem: those rows see every key before them)."""
    lq = q.shape[2]
    r0 = max(0, (lq - rows) // 128 * 128)
    lv = levels[:, :, r0 // 128:]
    ref = pyramid_attention_ref(q[:, :, r0:], k, v, lv, causal=True, block_m=128,
                                block_n=128)
    return rel_err(out_a[:, :, r0:], ref), rel_err(out_b[:, :, r0:], ref)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--quick", action="store_true", help="one seed, one-level plans 1 and 8, PSA on medium only")
    p.add_argument("--csv", default="results/ws_ab.csv")
    args = p.parse_args()
    dev = torch.cuda.get_device_name()
    print(dev, "torch", torch.__version__, "triton", triton.__version__, flush=True)
    new = not os.path.exists(args.csv)
    f = open(args.csv, "a", newline="")
    w = csv.DictWriter(f, fieldnames=FIELDS)
    if new:
        w.writeheader()
    cudnn = sdpa_dense("cudnn")
    seeds = (0,) if args.quick else (0, 1)
    for length in args.lengths:
        torch.manual_seed(length)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        cases = [(f"one level {lv}", q, k, v, one_level_plan(4, length, 128, lv))
                 for lv in ((1, 8) if args.quick else (1, 2, 4, 8))]
        for seed in seeds:
            for keep in (0.5, 0.25, 0.1):
                cases.append((f"random keep {keep} seed {seed}", q, k, v,
                              random_mixed_plan(1, 4, length, 128, keep, seed=seed)))
            cases.append((f"binary keep 0.2 seed {seed}", q, k, v,
                          random_mixed_plan(1, 4, length, 128, 0.2, mix=(1.0, 0.0, 0.0, 0.0), seed=seed)))
        frames, h, wd = VIDEO_GRIDS[length]
        for family in (("medium",) if args.quick else ("diffuse", "medium", "peaked")):
            for seed in seeds:
                qv, kv, vv, visual = video_qkv(frames, h, wd, device="cuda", dtype=torch.bfloat16,
                                               seed=1000 * seed + length + 23, **FAMILIES[family])
                plan = get_method("psa").plan(qv, kv, visual)
                cases.append((f"psa default {family} s{seed}", qv, kv, vv, plan.levels))
        for name, qq, kk, vv, levels in cases:
            pooled = bool((levels > 1).any())
            pyr = build_kv_pyramid(kk, vv, block_n=128) if pooled else None
            cp = compile_plan(levels, qq.shape[2], kk.shape[2], 128, 128, True)
            fns = {"cudnn": lambda: cudnn(qq, kk, vv)}
            for kern in ("triton", "ws"):
                fns[kern] = (lambda kern=kern: pyramid_attention(qq, kk, vv, levels, pyramid=pyr, plan=cp,
                                                                 check_levels=False, pooled=pooled, kernel=kern))
            outs = {key: fn() for key, fn in fns.items() if key != "cudnn"}
            best = {key: float("inf") for key in fns}
            for _ in range(3):
                for key, fn in fns.items():
                    best[key] = min(best[key], device_time_ms(fn, reps=20, trials=3))
            e_t, e_w = sampled_error(qq, kk, vv, levels, outs["triton"], outs["ws"])
            row = dict(date=datetime.date.today().isoformat(), device=dev,
                       shapes=f"B=1 Hq=28 Hkv=4 D=128 L={qq.shape[2]} bf16 causal", length=qq.shape[2], plan=name,
                       cudnn_ms=f"{best['cudnn']:.4f}", triton_ms=f"{best['triton']:.4f}", ws_ms=f"{best['ws']:.4f}",
                       ws_over_triton=f"{best['ws'] / best['triton']:.3f}",
                       triton_vs_cudnn=f"{best['cudnn'] / best['triton']:.3f}",
                       ws_vs_cudnn=f"{best['cudnn'] / best['ws']:.3f}",
                       diff=f"{rel_err(outs['ws'], outs['triton']):.1e}", err_triton=f"{e_t:.2e}", err_ws=f"{e_w:.2e}")
            w.writerow(row)
            f.flush()
            print(f"L={qq.shape[2]} {name:28s} cuDNN {best['cudnn']:.3f}  triton {best['triton']:.3f} "
                  f"({row['triton_vs_cudnn']})  ws {best['ws']:.3f} ({row['ws_vs_cudnn']})  ws/triton "
                  f"{row['ws_over_triton']}  diff {row['diff']}  err {row['err_triton']} / {row['err_ws']}",
                  flush=True)
        torch.cuda.empty_cache()
    f.close()


if __name__ == "__main__":
    main()
