"""Same-run A/B: the exact loop's exponentials all on the special-function unit (the default) or shared with the
FMA pipe (``pyramid.EXP2_SPLIT``: odd columns through a cubic for ``2 ** frac`` and the exponent bits). Plans:
every block exact (against cuDNN), random mixes keeping half and a tenth of the blocks, PSA's default on three
families. Each plan alternates the two settings over three rounds (kernel alone, prebuilt pyramid and plan lists;
device time with the host ahead, and ``do_bench``), and reports the best of each, with the outputs' difference.

Run on a GPU from the repository root: python notes/ab/exp_split_ab.py [--lengths 8192 32768] [--csv PATH]
"""

import argparse
import csv

import torch
import triton

from vlmsparse.bench.common import device_time_ms, sdpa_dense
from vlmsparse.bench.kernel import VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, plan_shape, pyramid_attention
from vlmsparse.kernels import pyramid as pyramid_module
from vlmsparse.methods import get_method

from tail_parts import seeded_qkv


def timed(fn):
    return device_time_ms(fn), triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median")


def measure(label, q, k, v, levels, writer, dense=None, rounds=3):
    lq, lk = q.shape[2], k.shape[2]
    pyr = build_kv_pyramid(k, v)
    plan = compile_plan(levels, lq, lk, 128, 128, True)
    fn = lambda: pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, diagonal_kept=True)
    best, outs = {}, {}
    for _ in range(rounds):
        for split in (False, True):
            pyramid_module.EXP2_SPLIT = split
            outs[split] = fn().float()
            dev, eager = timed(fn)
            old = best.get(split, (float("inf"), float("inf")))
            best[split] = (min(old[0], dev), min(old[1], eager))
    pyramid_module.EXP2_SPLIT = False
    diff = ((outs[True] - outs[False]).norm() / outs[False].norm()).item()
    ref = None if dense is None else dense.float()
    errs = {s: float("nan") if ref is None else ((outs[s] - ref).norm() / ref.norm()).item() for s in (False, True)}
    row = dict(length=lq, plan=label, device_ms=best[False][0], device_ms_split=best[True][0],
               ms=best[False][1], ms_split=best[True][1], split_over_default_device=best[True][0] / best[False][0],
               split_over_default=best[True][1] / best[False][1], diff=diff, err_vs_cudnn=errs[False],
               err_vs_cudnn_split=errs[True])
    writer.writerow(row)
    print(f"L={lq} {label:28s} device {best[False][0]:.4f} -> {best[True][0]:.4f} ms "
          f"({row['split_over_default_device']:.3f}x)  eager {best[False][1]:.4f} -> {best[True][1]:.4f} "
          f"({row['split_over_default']:.3f}x)  diff {diff:.1e}  err {errs[False]:.1e} / {errs[True]:.1e}", flush=True)
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--csv", default="exp_split_ab.csv")
    args = p.parse_args()
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["length", "plan", "device_ms", "device_ms_split", "ms", "ms_split",
                                               "split_over_default_device", "split_over_default", "diff",
                                               "err_vs_cudnn", "err_vs_cudnn_split", "cudnn_device_ms", "cudnn_ms"])
        writer.writeheader()
        for length in args.lengths:
            q, k, v = seeded_qkv(length)
            cudnn = sdpa_dense("cudnn")
            dense = cudnn(q, k, v)
            dev, eager = timed(lambda: cudnn(q, k, v))
            writer.writerow(dict(length=length, plan="cudnn", cudnn_device_ms=dev, cudnn_ms=eager))
            print(f"L={length} cuDNN device {dev:.4f} ms eager {eager:.4f} ms", flush=True)
            ones = torch.ones(plan_shape(1, 4, length, length, 128, 128), dtype=torch.int8, device="cuda")
            row = measure("all level 1", q, k, v, ones, writer, dense=dense)
            print(f"   of cuDNN: device {dev / row['device_ms']:.3f} -> {dev / row['device_ms_split']:.3f}, eager "
                  f"{eager / row['ms']:.3f} -> {eager / row['ms_split']:.3f}", flush=True)
            for keep in (0.5, 0.1):
                for seed in (0, 1):
                    measure(f"random keep {keep} seed {seed}", q, k, v,
                            random_mixed_plan(1, 4, length, 128, keep, seed=seed), writer)
            frames, h, w = VIDEO_GRIDS[length]
            for family in ("diffuse", "medium", "peaked"):
                qv, kv, vv, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16, seed=length + 5,
                                               **FAMILIES[family])
                measure(f"psa default {family}", qv, kv, vv, get_method("psa").plan(qv, kv, visual).levels, writer)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
