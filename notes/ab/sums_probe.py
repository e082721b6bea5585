"""Forms of the skipped-sums launch that tail aggregation runs before the kernel, timed against each other.

Each form computes, per plan row, the skip mask (levels == 0 on wholly visible blocks) times the per-block key /
value sums and counts (``[rows, 2 D + 1]``); they differ in the matmul (float32 FMA, or on tensor cores three
tf32 products or the sums in three bfloat16 parts), the tile shapes and whether the block sums are read as float64
(as up to kernel v13) or float32 (v14). Times are CUDA-graph
replays (GPU time only), for plans with one plan head per kv-head (``Hm = 4``) and per query head (``Hm = 28``).

Run on a GPU from the repository root: python notes/ab/sums_probe.py
"""

import itertools

import torch
import triton
import triton.language as tl

from vlmsparse.bench.kernel import random_mixed_plan
from vlmsparse.kernels import build_kv_pyramid
from vlmsparse.kernels.pyramid import _skip_mask, skipped_key_sums


@triton.jit
def _sums(Levels, Sums, Out, n_qb, n_kb, rows_per_kv_head, q_len, k_len, width,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, R: tl.constexpr, C: tl.constexpr, W: tl.constexpr,
          PRECISION: tl.constexpr):
    bkv = tl.program_id(2)
    rows = tl.program_id(0) * R + tl.arange(0, R)
    r_ok = rows < rows_per_kv_head
    first_row = (rows % n_qb) * BLOCK_M
    cols = tl.program_id(1) * W + tl.arange(0, W)
    c_ok = cols < width
    row = bkv.to(tl.int64) * rows_per_kv_head + rows
    sums = Sums + bkv.to(tl.int64) * n_kb * width
    acc = tl.zeros([R, W], dtype=tl.float32)
    for c0 in range(0, n_kb, C):
        kb = c0 + tl.arange(0, C)
        kb_ok = kb < n_kb
        m = _skip_mask(Levels, row, r_ok, first_row, kb, kb_ok, n_kb, q_len, k_len, True, BLOCK_N)
        x = tl.load(sums + kb[:, None] * width + cols[None, :], mask=kb_ok[:, None] & c_ok[None, :], other=0.0)
        x = x.to(tl.float32)
        if PRECISION == "bf16x3":  # the sums in three bfloat16 parts (about 24 bits), the 0/1 mask exact
            mb = m.to(tl.bfloat16)
            hi = x.to(tl.bfloat16)
            r = x - hi.to(tl.float32)
            mid = r.to(tl.bfloat16)
            lo = (r - mid.to(tl.float32)).to(tl.bfloat16)
            acc = tl.dot(mb, lo, tl.dot(mb, mid, tl.dot(mb, hi, acc)))
        else:
            acc = tl.dot(m, x, acc, input_precision=PRECISION)
    tl.store(Out + row[:, None] * width + cols[None, :], acc, mask=r_ok[:, None] & c_ok[None, :])


def form(levels, block_sums, length, r, c, w, precision, warps):
    b, hm, n_qb, n_kb = levels.shape
    hkv, width = block_sums.shape[1], block_sums.shape[3]
    rows = (hm // hkv) * n_qb
    out = torch.empty(b * hm * n_qb, width, device=levels.device, dtype=torch.float32)
    _sums[(triton.cdiv(rows, r), triton.cdiv(width, w), b * hkv)](
        levels, block_sums, out, n_qb, n_kb, rows, length, length, width, BLOCK_M=128, BLOCK_N=128, R=r, C=c, W=w,
        PRECISION=precision, num_warps=warps)
    return out


def graphed_ms(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return min(triton.testing.do_bench(g.replay, warmup=25, rep=100, return_mode="median") for _ in range(2))


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    for length in (8192, 32768):
        gen = torch.Generator(device="cuda").manual_seed(length)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        pyr = build_kv_pyramid(k, v, tail=True, block_n=128)
        s32 = pyr.block_sums.float().contiguous()
        s64 = s32.double()
        for hm in (4, 28):
            lv4 = random_mixed_plan(1, 4, length, 128, 0.25, seed=0)
            levels = lv4.repeat_interleave(hm // 4, 1).contiguous()
            want = skipped_key_sums(levels, pyr, length, length, 128, 128, True).double()
            t0 = graphed_ms(lambda: skipped_key_sums(levels, pyr, length, length, 128, 128, True))
            print(f"L={length} Hm={hm} shipped form {t0 * 1000:.1f} us", flush=True)
            for (r, c, w, warps), precision, dt in itertools.product(
                    ((64, 32, 64, 4), (64, 64, 64, 4), (64, 32, 128, 4), (64, 64, 128, 8), (128, 32, 64, 8)),
                    ("ieee", "tf32x3", "bf16x3"), ("fp64", "fp32")):
                if precision == "ieee" and (c, w) != (32, 64):
                    continue
                sums = s64 if dt == "fp64" else s32
                try:
                    got = form(levels, sums, length, r, c, w, precision, warps).double()
                    t = graphed_ms(lambda: form(levels, sums, length, r, c, w, precision, warps))
                except Exception as e:  # a form that does not compile is reported, not fatal
                    print(f"L={length} Hm={hm} R={r} C={c} W={w} warps={warps} {precision} {dt}: {type(e).__name__}")
                    continue
                err = ((got - want).abs().max() / want.abs().max()).item()
                print(f"L={length} Hm={hm} R={r} C={c} W={w} warps={warps} {precision:6s} {dt}: {t * 1000:6.1f} us"
                      f"  max err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
