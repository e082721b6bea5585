"""Binary plans on the kernel compiled without its pooled loops (``pooled=False``) against the general kernel.

Same run, same inputs, same plans. For each plan the kernel alone (prebuilt pyramid and plan lists) with
``pooled=True`` (the general kernel, a full pyramid) and ``pooled=False`` (no pooled loops; with tail, a pyramid of
block sums only), timed eagerly (``do_bench``: L2 flushed before every call) and replayed from a CUDA graph
(GPU time only); then the whole call with its pyramid built inside; then XAttention's and the `psa-exact-tail`
planner's plan + kernel on video-like inputs of three families, their plans run with ``pooled`` as planned and
forced ``True``. Outputs of both kernels are compared to the bit. Plans: every block exact (against cuDNN in
the same run), random binary plans keeping 0.5 / 0.25 / 0.1 of the off-diagonal blocks (two seeds each).

Run on a GPU from the repository root: python notes/ab/binary_ab.py [--lengths 8192 32768] [--out DIR]
"""

import argparse
import csv
import datetime
import os

import torch
import triton

from vlmsparse.bench.common import device_time_ms, sdpa_dense
from vlmsparse.bench.kernel import VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, plan_shape, pyramid_attention
from vlmsparse.methods import get_method

from tail_parts import bench, graphed, seeded_qkv  # this folder is on the path when run as a script


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--skip-methods", action="store_true")
    args = p.parse_args()
    env = dict(date=datetime.date.today().isoformat(), device=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=triton.__version__)
    print(env, flush=True)
    rows = []
    cudnn = sdpa_dense("cudnn")
    for length in args.lengths:
        q, k, v = seeded_qkv(length)
        t_cudnn = bench(lambda: cudnn(q, k, v))
        g_cudnn = graphed(lambda: cudnn(q, k, v))
        print(f"L={length} cudnn {t_cudnn:.4f} ms (graph {g_cudnn:.4f})", flush=True)
        plans = {"all level 1": torch.ones(plan_shape(1, 4, length, length, 128, 128), dtype=torch.int8, device="cuda")}
        for keep in (0.5, 0.25, 0.1):
            for seed in (0, 1):
                plans[f"random keep {keep} seed {seed}"] = (random_mixed_plan(1, 4, length, 128, keep, seed=seed) > 0).to(
                    torch.int8)
        for label, levels in plans.items():
            plan = compile_plan(levels, length, length, 128, 128, True)
            for tail in ((False,) if label == "all level 1" else (False, True)):
                pyr_full = build_kv_pyramid(k, v, tail=tail, block_n=128)
                pyr_bin = build_kv_pyramid(k, v, tail=True, block_n=128, pooled=False) if tail else None

                def call(pooled, whole=False):
                    pyr = None if whole else (pyr_full if pooled else pyr_bin)
                    return lambda: pyramid_attention(q, k, v, levels, tail=tail, pyramid=pyr, plan=None if whole else plan,
                                                     check_levels=False, diagonal_kept=True, pooled=pooled)

                same = torch.equal(call(True)(), call(False)())
                t = {pooled: bench(call(pooled)) for pooled in (True, False)}
                g = {pooled: graphed(call(pooled)) for pooled in (True, False)}
                w = {pooled: bench(call(pooled, whole=True)) for pooled in (True, False)}
                row = dict(env, L=length, plan=label, tail=tail, cudnn_ms=t_cudnn, cudnn_graph_ms=g_cudnn,
                           general_ms=t[True], binary_ms=t[False], ratio=t[False] / t[True],
                           general_graph_ms=g[True], binary_graph_ms=g[False], graph_ratio=g[False] / g[True],
                           general_whole_ms=w[True], binary_whole_ms=w[False], whole_ratio=w[False] / w[True],
                           general_vs_cudnn=t_cudnn / t[True], binary_vs_cudnn=t_cudnn / t[False],
                           general_graph_vs_cudnn=g_cudnn / g[True], binary_graph_vs_cudnn=g_cudnn / g[False],
                           bitwise_equal=same)
                rows.append(row)
                print(f"L={length} {label} tail={tail}: general {t[True]:.4f} binary {t[False]:.4f} ms "
                      f"({row['ratio']:.3f}); graph {g[True]:.4f} / {g[False]:.4f} ({row['graph_ratio']:.3f}); whole "
                      f"{w[True]:.4f} / {w[False]:.4f} ({row['whole_ratio']:.3f}); vs cudnn {row['general_vs_cudnn']:.3f}"
                      f" / {row['binary_vs_cudnn']:.3f} (graph {row['general_graph_vs_cudnn']:.3f} / "
                      f"{row['binary_graph_vs_cudnn']:.3f}); equal {same}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
        if args.skip_methods:
            continue
        frames, height, width = VIDEO_GRIDS.get(length, (length // 256, 16, 16))
        for family in ("diffuse", "medium", "peaked"):
            q, k, v, visual = video_qkv(frames, height, width, device="cuda", dtype=torch.bfloat16,
                                        seed=7000 + length, **FAMILIES[family])
            t_dense = bench(lambda: cudnn(q, k, v))
            d_dense = device_time_ms(lambda: cudnn(q, k, v))
            for name, method in (("xattention 0.9", get_method("xattention", threshold=0.9)),
                                 ("psa-exact-tail 0.75", get_method("psa", thresholds=(0.75,) * 4, stride=16, tail=True))):
                plan0 = method.plan(q, k, visual)
                assert not plan0.pooled

                def layer(force):
                    def f():
                        p_ = method.plan(q, k, visual)
                        if force:
                            p_.pooled = True
                        return p_.run(q, k, v)
                    return f

                t = {force: bench(layer(force)) for force in (True, False)}
                d = {force: device_time_ms(layer(force)) for force in (True, False)}
                row = dict(env, L=q.shape[2], plan=f"{family}: {name} plan + kernel", tail=plan0.tail, cudnn_ms=t_dense,
                           general_ms=t[True], binary_ms=t[False], ratio=t[False] / t[True],
                           general_device_ms=d[True], binary_device_ms=d[False], device_ratio=d[False] / d[True],
                           general_vs_cudnn=t_dense / t[True], binary_vs_cudnn=t_dense / t[False],
                           general_device_vs_cudnn=d_dense / d[True], binary_device_vs_cudnn=d_dense / d[False])
                rows.append(row)
                print(f"L={q.shape[2]} {family} {name}: eager {t[True]:.4f} -> {t[False]:.4f} ms ({row['ratio']:.3f}), "
                      f"device {d[True]:.4f} -> {d[False]:.4f} ({row['device_ratio']:.3f}); vs cudnn eager "
                      f"{row['general_vs_cudnn']:.3f} -> {row['binary_vs_cudnn']:.3f}, device "
                      f"{row['general_device_vs_cudnn']:.3f} -> {row['binary_device_vs_cudnn']:.3f}", flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    keys = []
    for r in rows:
        keys += [k_ for k_ in r if k_ not in keys]
    path = os.path.join(args.out, "binary_ab.csv")
    with open(path, "w", newline="") as f:
        w_ = csv.DictWriter(f, fieldnames=keys)
        w_.writeheader()
        w_.writerows(rows)
    print("wrote", path)


if __name__ == "__main__":
    main()
