"""Tile shapes of the antidiagonal estimate's tile launch, timed against the defaults in one process.

Run on a GPU from the repository root: python notes/ab/estimate_tiles_ab.py
Prints, per length and stride, each (block_r, block_c, block_k, num_warps, num_stages) setting's time, its rate and
its ratio to the default setting, and checks every setting's result against the default's.
"""


import torch
import triton

from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")


CONFIGS = [
    (r, c, kk, w, s)
    for (r, c) in ((128, 128), (128, 256), (256, 128), (64, 256))
    for kk in (64, 128)
    for (w, s) in ((8, 3), (8, 4), (4, 3))
]


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    for length in (8192, 32768):
        torch.manual_seed(0)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        for stride in (8, 16):
            kw = dict(stride=stride, block_m=128, block_n=128)
            ref = antidiagonal_block_scores_triton(q, k, **kw)
            t0 = min(t_ms(lambda: antidiagonal_block_scores_triton(q, k, **kw)) for _ in range(2))
            flops = 2 * (length / stride) ** 2 / 2 * stride * 128 * 28
            print(f"L={length} S={stride} default {t0 * 1e3:.0f} us ({flops / t0 / 1e9:.0f} TFLOP/s)", flush=True)
            best = (t0, "default")
            for r, c, kk, w, s in CONFIGS:
                if stride == 16 and kk == 128 and w == 4:
                    continue
                f = lambda: antidiagonal_block_scores_triton(q, k, block_r=r, block_c=c, block_k=kk, num_warps=w,
                                                             num_stages=s, **kw)
                try:
                    diff = ((f() - ref).norm() / ref.norm()).item()
                    t = t_ms(f)
                except Exception as e:  # a setting may not fit in shared memory: report and go on
                    print(f"  r={r} c={c} k={kk} w={w} s={s}: failed {type(e).__name__}: {str(e)[:120]}", flush=True)
                    continue
                print(f"  r={r} c={c} k={kk} w={w} s={s}: {t * 1e3:.0f} us ({flops / t / 1e9:.0f} TFLOP/s) "
                      f"ratio {t / t0:.3f} diff {diff:.1e}", flush=True)
                if t < best[0]:
                    best = (t, f"r={r} c={c} k={kk} w={w} s={s}")
            print(f"L={length} S={stride} best {best[1]} {best[0] * 1e3:.0f} us ({best[0] / t0:.3f} of default)",
                  flush=True)


if __name__ == "__main__":
    main()
