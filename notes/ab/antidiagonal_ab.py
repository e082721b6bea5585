"""A/B in one process: the antidiagonal estimate kernel against past versions from git tags (notes/ab/variants.py).

  antidiagonal-rows: the one-kernel version before the split into a tile launch and a reduction launch (one
      program per ``BLOCK_R`` tile rows walking every visible column tile); H200, 2026-12-02: stride 8 125 vs
      76 us (8k) and 1214 vs 994 us (32k); stride 16 83 vs 58 us and 727 vs 511 us.
  antidiagonal-nested: an earlier version, a loop over tiles around a loop over stride steps (the
      rows version ran one loop over (tile, step) pairs, the tile's softmax under a branch on its last step).
  antidiagonal-exp-flatten: the nested version with ``tl.range(..., flatten=True)`` on the tile loop (the
      compiler flattens the nest; as fast as the rows version on an H100 with triton 3.6).

Run on a GPU from the repository root: python notes/ab/antidiagonal_ab.py [tags]
"""

import sys

import torch
import triton

from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton

from variants import load

OTHERS = sys.argv[1:] or ["antidiagonal-rows"]


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")


def main():
    variants = {tag: load(tag, "antidiagonal") for tag in OTHERS}
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    for length in (8192, 32768):
        torch.manual_seed(0)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        for stride in (8, 16):
            kw = dict(stride=stride, block_m=128, block_n=128)
            a = lambda: antidiagonal_block_scores_triton(q, k, **kw)
            ref = a()
            flops = 2 * (length / stride) ** 2 / 2 * stride * 128 * 28
            for name, module in variants.items():
                b = lambda: module.antidiagonal_block_scores_triton(q, k, **kw)
                try:
                    diff = ((b() - ref).norm() / ref.norm()).item()
                except Exception as e:  # a variant may fail to compile: report and go on
                    print(f"L={length} S={stride} {name}: failed {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                ta1, tb1, ta2, tb2 = t_ms(a), t_ms(b), t_ms(a), t_ms(b)
                ta, tb = min(ta1, ta2), min(tb1, tb2)
                print(f"L={length} S={stride}: current {ta * 1e3:.0f} us ({flops / ta / 1e9:.0f} TFLOP/s), {name} "
                      f"{tb * 1e3:.0f} us ({flops / tb / 1e9:.0f} TFLOP/s), ratio {tb / ta:.3f} (variant / current), "
                      f"diff {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
