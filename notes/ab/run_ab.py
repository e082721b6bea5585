"""A/B in one process: the current kernel against other versions kept as files in this folder, same plans.

  pyramid_v7.py: the kernel before the pooled loops read their next block index one step ahead.
  pyramid_pooled_desc.py: the current kernel with pyramid tiles through tensor descriptors as well (1% faster
      in the kernel, but six more descriptors encoded on the host per call; notes/kernel.md).
  pyramid_v6.py: the kernel before K/V tiles were read through tensor descriptors (TMA).
  pyramid_v5.py: the kernel before the exact loop read its next block index one step ahead (the rest of the
      files below are variants of this version, each A/B'd against it when it was current; notes/kernel.md).
  pyramid_whole_tiles.py: P pooled blocks of level P gathered into one tile (reverted).
  pyramid_lazy.py: lazy rescaling in every unmasked loop (the running max moves only when it would rise by
      more than 8 in log2 units).
  pyramid_lazy_pooled.py: lazy rescaling in the pooled loops only.
  pyramid_pairs.py: pooled blocks visited two at a time (two whole tiles, one softmax update).
  pyramid_exact_masked.py: the exact loop with an always-true row mask on its K/V loads.
  pyramid_pooled_range.py: the pooled loops as ``tl.range(..., num_stages=3)``.
  pyramid_unmasked_pooled.py: pooled loads without masks, a probe only (wrong on a ragged last block; use
      it with notes/fixed_costs.py, whose lengths are multiples of 128, not here).
The kernel files of other versions are in the git history.

Run on a GPU from the repository root: python notes/ab/run_ab.py [files in this folder]
"""

import sys

import torch
import triton

from vlmsparse.bench.kernel import METHOD_SETTINGS, VIDEO_GRIDS, random_mixed_plan
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.methods import get_method

from variant_files import load

OTHERS = sys.argv[1:] or ["pyramid_v7.py"]
VARIANTS = {name: load(name) for name in OTHERS}


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")


def compare(label, q, k, v, levels, kw):
    pyr = build_kv_pyramid(k, v, tail=kw.get("tail", False))
    plan = compile_plan(levels, q.shape[2], k.shape[2], kw["block_m"], kw["block_n"], kw["causal"])
    a = lambda: pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, **kw)
    ref = a().float()
    ta1 = t_ms(a)
    for name, module in VARIANTS.items():
        b = lambda: module.pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False, **kw)
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
