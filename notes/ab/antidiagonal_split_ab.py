"""A/B in one process: the antidiagonal estimate's split variant (one program per tile of tile logits, then a
reduction launch) against the rows variant (one program per row of tiles walking every visible column tile),
plus a small tile sweep of the split variant.

Shapes: bf16 q [1, 28, L, 128], k [1, 4, L, 128], causal, 128 x 128 blocks, L = 8192 and 32768, stride 8 and 16.
Times are ``triton.testing.do_bench`` medians; TFLOP/s counts the causal half of the tile GEMM once
(``L^2 D / S`` per head). Runs in well under a minute on an H200.

Run on a GPU from the repository root: python notes/ab/antidiagonal_split_ab.py [--no-sweep]
"""

import pathlib
import sys

import torch
import triton

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository's vlmsparse first

from vlmsparse.kernels.antidiagonal import antidiagonal_block_scores_triton  # noqa: E402

# split-variant sweep: block_r, block_c, block_k, num_warps, num_stages (the first is the default)
SWEEP = [
    (128, 128, 64, 8, 3),
    (128, 128, 64, 8, 4),
    (128, 256, 64, 8, 3),
    (64, 128, 64, 4, 4),
    (128, 128, 128, 8, 2),
]


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")


def compare(got, ref):
    diff = (got - ref).abs()
    return diff.max().item(), (diff.norm() / ref.norm()).item()


def main():
    sweep = "--no-sweep" not in sys.argv
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    print(f"{'L':>6} {'S':>3} {'rows us':>9} {'split us':>9} {'speedup':>8} {'split TF/s':>10} "
          f"{'max abs diff':>12} {'rel diff':>9} {'dense us':>9}", flush=True)
    for length in (8192, 32768):
        torch.manual_seed(0)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        try:
            v = torch.randn_like(k)
            dense = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            t_dense = t_ms(dense)
            del v
        except Exception:  # older torch without enable_gqa: leave the column empty
            t_dense = float("nan")
        for stride in (8, 16):
            kw = dict(stride=stride, block_m=128, block_n=128)
            rows = lambda: antidiagonal_block_scores_triton(q, k, variant="rows", **kw)
            split = lambda: antidiagonal_block_scores_triton(q, k, variant="split", **kw)
            ref, got = rows(), split()
            max_abs, rel = compare(got, ref)
            t_r1, t_s1, t_r2, t_s2 = t_ms(rows), t_ms(split), t_ms(rows), t_ms(split)
            t_r, t_s = min(t_r1, t_r2), min(t_s1, t_s2)
            flops = length * length * 128 / stride * 28
            print(f"{length:>6} {stride:>3} {t_r * 1e3:>9.1f} {t_s * 1e3:>9.1f} {t_r / t_s:>8.2f} "
                  f"{flops / t_s / 1e9:>10.0f} {max_abs:>12.2e} {rel:>9.1e} {t_dense * 1e3:>9.1f}", flush=True)
            if not sweep:
                continue
            for br, bc, bk, w, s in SWEEP:
                fn = lambda: antidiagonal_block_scores_triton(q, k, variant="split", block_r=br, block_c=bc,
                                                              block_k=bk, num_warps=w, num_stages=s, **kw)
                try:
                    out = fn()
                    t = t_ms(fn)
                except Exception as e:  # a config may not fit in shared memory: report and go on
                    print(f"    sweep r{br} c{bc} k{bk} w{w} s{s}: failed {type(e).__name__}: {str(e)[:120]}",
                          flush=True)
                    continue
                max_abs, rel = compare(out, ref)
                print(f"    sweep r{br:<4}c{bc:<4}k{bk:<4}w{w} s{s}: {t * 1e3:8.1f} us {flops / t / 1e9:5.0f} TFLOP/s, "
                      f"vs rows: max abs {max_abs:.1e} rel {rel:.1e}", flush=True)
        del q, k
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
