"""A/B in one process: the current kernel against past versions from git tags (notes/ab/variants.py), same
inputs and plans; each version builds its own K/V pyramid and plan lists with its own helpers.

Tags (`git tag -l 'kernel-*'`; notes/kernel.md has what each measured): kernel-v8, kernel-v7, kernel-v6,
kernel-v5, kernel-v4-whole-tiles, kernel-v4-leftover-tiles, kernel-v3-gathered-tiles, and the experiments on
v5 (kernel-exp-lazy, kernel-exp-lazy-pooled, kernel-exp-pairs, kernel-exp-exact-masked, kernel-exp-pooled-range;
kernel-exp-unmasked-pooled is wrong on a ragged last block, for fixed_costs.py only) and on v8
(kernel-exp-pooled-desc).

Run on a GPU from the repository root: python notes/ab/run_ab.py [tags, default kernel-v7]
"""

import sys

import torch
import triton

from vlmsparse.bench.kernel import METHOD_SETTINGS, VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.methods import get_method

from variants import load, package_of

OTHERS = sys.argv[1:] or ["kernel-v7"]
VARIANTS = {tag: load(tag) for tag in OTHERS}


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")


def compare(label, q, k, v, levels, kw):
    pyr = build_kv_pyramid(k, v, tail=kw.get("tail", False))
    plan = compile_plan(levels, q.shape[2], k.shape[2], kw["block_m"], kw["block_n"], kw["causal"])
    a = lambda: pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, **kw)
    ref = a().float()
    ta1 = t_ms(a)
    for name, module in VARIANTS.items():
        own = package_of(module)
        pyr_b = own.build_kv_pyramid(k, v, tail=kw.get("tail", False))
        plan_b = own.compile_plan(levels, q.shape[2], k.shape[2], kw["block_m"], kw["block_n"], kw["causal"])
        b = lambda: module.pyramid_attention(q, k, v, levels, pyramid=pyr_b, plan=plan_b, check_levels=False, **kw)
        diff = ((b().float() - ref).norm() / ref.norm()).item()
        tb1, ta2, tb2 = t_ms(b), t_ms(a), t_ms(b)
        print(f"{label}: current {ta1:.3f}/{ta2:.3f} ms, {name} {tb1:.3f}/{tb2:.3f} ms, "
              f"ratio {min(tb1, tb2) / min(ta1, ta2):.3f} (variant / current), diff {diff:.1e}", flush=True)
        ta1 = ta2


def main():
    for length in (8192, 32768):
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        kw = dict(block_m=128, block_n=128, causal=True)
        compare(f"L={length} all level 1", q, k, v,
                random_mixed_plan(1, 4, length, 128, 1.0, mix=(1.0, 0.0, 0.0, 0.0), seed=length), kw)
        for keep in (0.5, 0.1):
            compare(f"L={length} random keep {keep}", q, k, v, random_mixed_plan(1, 4, length, 128, keep, seed=length), kw)
        frames, height, width = VIDEO_GRIDS[length]
        q, k, v, visual = video_qkv(frames, height, width, heads_q=28, heads_kv=4, head_dim=128, device="cuda",
                                    dtype=torch.bfloat16, seed=length)
        for label in ("psa", "psa-videomme"):
            setting = dict(METHOD_SETTINGS[label])
            method = get_method(setting.pop("name"), **setting)
            plan = method.plan(q, k, visual)
            compare(f"L={q.shape[2]} {label}", q, k, v, plan.levels, plan.kernel_kwargs())


if __name__ == "__main__":
    main()
