"""Tail aggregation's prefix sums: the two-launch parallel scan against the sequential walk it replaced.

The sequential version (one program per head and 32 head-dim columns, walking all keys in steps of 64) is kept
here so both run in one process. Run on a GPU from the repository root: python notes/ab/prefix_ab.py
"""

import torch
import triton
import triton.language as tl

from vlmsparse.kernels.blocks import cdiv
from vlmsparse.kernels.kv_pyramid import build_kv_pyramid, prefix_sums_into


@triton.jit
def _sequential_prefix(X, PX, length, stride_b, stride_h, stride_l, n_heads, head_dim,
                       TILE: tl.constexpr, CHUNK_D: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // n_heads
    h = bh % n_heads
    offs_d = tl.program_id(1) * CHUNK_D + tl.arange(0, CHUNK_D)
    d_mask = offs_d < head_dim
    x_base = X + b * stride_b + h * stride_h
    out_base = PX + bh.to(tl.int64) * (length + 1) * head_dim
    running = tl.zeros([CHUNK_D], dtype=tl.float32)
    tl.store(out_base + offs_d, running, mask=d_mask)
    for t0 in range(0, length, TILE):
        rows = t0 + tl.arange(0, TILE)
        ok = (rows < length)[:, None] & d_mask[None, :]
        x = tl.load(x_base + rows[:, None] * stride_l + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
        tl.store(out_base + (rows[:, None] + 1) * head_dim + offs_d[None, :], tl.cumsum(x, axis=0) + running[None, :],
                 mask=ok)
        running += tl.sum(x, axis=0)


def sequential(x, out):
    b, h, length, d = x.shape
    _sequential_prefix[(b * h, cdiv(d, 32))](x, out, length, x.stride(0), x.stride(1), x.stride(2), h, d,
                                             TILE=64, CHUNK_D=32)


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    for length in (8192, 16384, 32768):
        x = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        want = torch.cat([torch.zeros(1, 4, 1, 128, device="cuda", dtype=torch.float64), x.double().cumsum(2)], 2)
        a = torch.empty(1, 4, length + 1, 128, device="cuda")
        b = torch.empty_like(a)
        prefix_sums_into(x, a)
        sequential(x, b)
        err_a = ((a.double() - want).abs().max() / want.abs().max()).item()
        err_b = ((b.double() - want).abs().max() / want.abs().max()).item()
        t_a, t_b = t_ms(lambda: prefix_sums_into(x, a)), t_ms(lambda: sequential(x, b))
        k = torch.randn_like(x)
        t_pyr = t_ms(lambda: build_kv_pyramid(k, x, tail=False))
        t_pyr_tail = t_ms(lambda: build_kv_pyramid(k, x, tail=True))
        print(f"L={length} B=1 Hkv=4 D=128 bf16, one tensor: scan {t_a * 1e3:.1f} us (max err {err_a:.1e}), "
              f"sequential {t_b * 1e3:.1f} us (max err {err_b:.1e}); K/V pyramid {t_pyr * 1e3:.1f} us, "
              f"with tail prefix sums {t_pyr_tail * 1e3:.1f} us", flush=True)


if __name__ == "__main__":
    main()
