"""Same-run A/B of pooled-block handling: per-level marginal cost and a PSA plan's kernel time, per variant.

Variants: the current kernel and each earlier version named by its git tag (``--old kernel-v8
kernel-pooled-stream``), loaded by ``variants.py`` from ``notes/ab/.variants`` (materialise it here and carry the
folder to a GPU machine without the history). Run on a GPU from the repository root:
python notes/ab/pooled_ab.py --old kernel-v8 kernel-pooled-stream
"""

import argparse

import torch
import triton

from vlmsparse.bench.kernel import VIDEO_GRIDS, one_level_plan
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.methods import get_method

import variants


def bench(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", nargs="*", default=[])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    args = ap.parse_args()
    versions = {"current": (build_kv_pyramid, compile_plan, pyramid_attention)}
    for tag in args.old:
        old = variants.load(tag)
        versions[tag] = (old.build_kv_pyramid, old.compile_plan, old.pyramid_attention)
    print(torch.cuda.get_device_name(), "triton", triton.__version__)
    for length in args.lengths:
        torch.manual_seed(length)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        for name, (build, comp, attn) in versions.items():
            pyr = build(k, v)
            t = {}
            for level in (0, 1, 2, 4, 8):
                lv = one_level_plan(4, length, 128, level)
                plan = comp(lv, length, length, 128, 128, True)
                t[level] = bench(lambda: attn(q, k, v, lv, pyramid=pyr, plan=plan, check_levels=False))
            ex = t[1] - t[0]
            print(f"L={length} {name}: skip {t[0]:.3f} ms, exact {t[1]:.3f} ms; marginal cost " + ", ".join(
                f"level {p}: {(t[p] - t[0]) / ex:.3f}" for p in (2, 4, 8)), flush=True)
    frames, h, w = VIDEO_GRIDS[32768]
    q, k, v, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16, seed=7)
    for thresholds in ((0.7, 0.8, 0.9, 0.9), (0.36, 0.6, 0.76, 0.92)):
        plan = get_method("psa", thresholds=thresholds).plan(q, k, visual)
        sp = plan.sparsity().overall
        for name, (build, comp, attn) in versions.items():
            pyr = build(k, v)
            cp = comp(plan.levels, q.shape[2], q.shape[2], 128, 128, True)
            ms = bench(lambda: attn(q, k, v, plan.levels, pyramid=pyr, plan=cp, check_levels=False))
            c_ms = bench(lambda: comp(plan.levels, q.shape[2], q.shape[2], 128, 128, True))
            print(f"video 32k psa {thresholds} sparsity {sp:.3f}: {name} kernel {ms:.3f} ms, plan lists {c_ms:.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
