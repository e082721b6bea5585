"""Tile sweep of the fused antidiagonal estimate, and the K/V pyramid's achieved bandwidth.

Run on a GPU: python notes/planning_parts.py
"""

import torch
import triton

from vlmsparse.kernels import build_kv_pyramid
from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton

CONFIGS = [  # block_r, block_c, num_warps, num_stages (the first is the current default)
    (64, 128, 4, 3), (64, 128, 4, 4), (64, 64, 4, 3), (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3),
    (128, 64, 4, 3), (128, 128, 4, 3), (64, 256, 8, 3), (64, 128, 8, 3),
]


def main():
    for length in (8192, 32768):
        torch.manual_seed(0)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        t = triton.testing.do_bench(lambda: build_kv_pyramid(k, v), warmup=30, rep=200, return_mode="median")
        moved = 2 * (k.numel() * 2 + sum(k.numel() // p * 2 for p in (2, 4, 8)))
        print(f"L={length} build_kv_pyramid: {t * 1e3:.1f} us, {moved / (t * 1e-3) / 1e12:.2f} TB/s (K and V read once, "
              f"pooled copies written once)", flush=True)
        for stride in (8, 16):
            base = None
            for br, bc, w, s in CONFIGS:
                fn = lambda: antidiagonal_block_scores_triton(q, k, stride=stride, block_m=128, block_n=128,
                                                              block_r=br, block_c=bc, num_warps=w, num_stages=s)
                try:
                    out = fn()
                    t = triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median")
                except Exception as e:  # a config may not fit in shared memory: report and go on
                    print(f"  L={length} S={stride} r{br} c{bc} w{w} s{s}: failed {type(e).__name__}: {str(e)[:120]}")
                    continue
                if base is None:
                    base = out
                err = ((out - base).norm() / base.norm()).item()
                flops = 2 * (length / stride) ** 2 / 2 * stride * 128 * 28
                print(f"  L={length} S={stride} r{br} c{bc} w{w} s{s}: {t * 1e3:.0f} us, "
                      f"{flops / t / 1e9:.0f} TFLOP/s (one pass), diff vs first {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
