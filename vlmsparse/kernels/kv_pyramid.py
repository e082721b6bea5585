"""The K/V pyramid: mean-pooled copies of K and V (groups of 2, 4, 8 keys), and prefix sums for tail aggregation.

One Triton launch pools K and V at every level; a second one (only for tail aggregation) writes their float32
prefix sums. Plain-PyTorch versions define the result and serve CPU tensors without the Triton interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .blocks import POOLED_LEVELS, cdiv
from .validation import triton_can_run

_POOL_TILE = 128  # keys per program of the pooling kernel (a multiple of 8)
_PREFIX_TILE = 64  # keys per step of the prefix-sum kernel
_PREFIX_CHUNK_D = 32  # head-dim columns per program of the prefix-sum kernel


@dataclass
class KVPyramid:
    """Mean-pooled copies of K and V, and (for tail aggregation) their prefix sums.

    Build it once per call with :func:`build_kv_pyramid`, or once per layer and pass it to several calls.
    """

    k_len: int
    pooled_k: dict[int, torch.Tensor]  # p -> [B, Hkv, ceil(Lk / p), D], dtype of K, contiguous
    pooled_v: dict[int, torch.Tensor]
    prefix_k: torch.Tensor | None = None  # [B, Hkv, Lk + 1, D] float32, row t = sum of keys < t
    prefix_v: torch.Tensor | None = None


def build_kv_pyramid(k: torch.Tensor, v: torch.Tensor, *, tail: bool = False) -> KVPyramid:
    """Pool K and V in groups of 2, 4 and 8 keys (a partial last group is the mean of its own keys).

    With ``tail=True`` also the float32 prefix sums the kernel's tail aggregation reads.
    """
    if not triton_can_run(k.device):
        return build_kv_pyramid_torch(k, v, tail=tail)
    b, h, length, d = k.shape
    pooled_k = {p: torch.empty(b, h, cdiv(length, p), d, device=k.device, dtype=k.dtype) for p in POOLED_LEVELS}
    pooled_v = {p: torch.empty(b, h, cdiv(length, p), d, device=v.device, dtype=v.dtype) for p in POOLED_LEVELS}
    block_d = max(16, triton.next_power_of_2(d))
    for src, dst in ((k, pooled_k), (v, pooled_v)):
        _pool_kernel[(cdiv(length, _POOL_TILE), b * h)](
            src, dst[2], dst[4], dst[8], length, src.stride(0), src.stride(1), src.stride(2), h, d,
            BLOCK_D=block_d, TILE=_POOL_TILE,
        )
    prefix_k = prefix_v = None
    if tail:
        prefix_k = torch.empty(b, h, length + 1, d, device=k.device, dtype=torch.float32)
        prefix_v = torch.empty_like(prefix_k)
        for src, dst in ((k, prefix_k), (v, prefix_v)):
            _prefix_sum_kernel[(b * h, cdiv(d, _PREFIX_CHUNK_D))](
                src, dst, length, src.stride(0), src.stride(1), src.stride(2), h, d,
                TILE=_PREFIX_TILE, CHUNK_D=_PREFIX_CHUNK_D,
            )
    return KVPyramid(length, pooled_k, pooled_v, prefix_k, prefix_v)


def build_kv_pyramid_torch(k: torch.Tensor, v: torch.Tensor, *, tail: bool = False) -> KVPyramid:
    """:func:`build_kv_pyramid` in plain PyTorch (the definition; used for CPU tensors)."""
    b, h, length, d = k.shape
    pooled_k, pooled_v = {}, {}
    for p in POOLED_LEVELS:
        groups = cdiv(length, p)
        pad = groups * p - length
        counts = torch.clamp(length - torch.arange(groups, device=k.device) * p, max=p).to(torch.float32)
        for src, dst in ((k, pooled_k), (v, pooled_v)):
            x = torch.nn.functional.pad(src, (0, 0, 0, pad)) if pad else src
            s = x.reshape(b, h, groups, p, d).sum(-2, dtype=torch.float32)
            dst[p] = (s / counts[:, None]).to(src.dtype).contiguous()
    prefix_k = prefix_v = None
    if tail:
        zero = torch.zeros(b, h, 1, d, device=k.device, dtype=torch.float32)
        prefix_k = torch.cat([zero, k.float().cumsum(2)], 2).contiguous()
        prefix_v = torch.cat([zero, v.float().cumsum(2)], 2).contiguous()
    return KVPyramid(length, pooled_k, pooled_v, prefix_k, prefix_v)


@triton.jit
def _store_means(out_base, sums, g, length, offs_d, d_mask, head_dim, P: tl.constexpr):
    """Store ``sums [R, BLOCK_D]`` of groups ``g [R]`` of ``P`` keys as means (a partial last group: its own count)."""
    count = tl.minimum(length - g * P, P).to(tl.float32)
    means = sums / tl.maximum(count, 1.0)[:, None]
    n_groups = (length + P - 1) // P
    tl.store(out_base + g[:, None] * head_dim + offs_d[None, :], means.to(out_base.dtype.element_ty),
             mask=(g < n_groups)[:, None] & d_mask[None, :])


@triton.jit
def _load_rows(base, rows, length, stride_l, offs_d, d_mask):
    """Rows ``rows`` of one head as float32 (rows past ``length`` read as zeros)."""
    ok = (rows < length)[:, None] & d_mask[None, :]
    return tl.load(base + rows[:, None] * stride_l + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _pool_kernel(X, X2, X4, X8, length, stride_b, stride_h, stride_l, n_heads, head_dim,
                 BLOCK_D: tl.constexpr, TILE: tl.constexpr):
    """Pool ``TILE`` keys of one head at levels 2, 4 and 8.

    The tile is read as 8 interleaved row sets (rows ``8 r + i``), so every group sum is an elementwise add of
    whole rows held by the same threads: no data moves between threads (a reshape-and-sum over rows did;
    timings in notes/kernel.md).
    """
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    R: tl.constexpr = TILE // 8
    r = tile * R + tl.arange(0, R)  # level-8 group of each row set's row
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    base = X + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    x0 = _load_rows(base, 8 * r + 0, length, stride_l, offs_d, d_mask)
    x1 = _load_rows(base, 8 * r + 1, length, stride_l, offs_d, d_mask)
    x2 = _load_rows(base, 8 * r + 2, length, stride_l, offs_d, d_mask)
    x3 = _load_rows(base, 8 * r + 3, length, stride_l, offs_d, d_mask)
    x4 = _load_rows(base, 8 * r + 4, length, stride_l, offs_d, d_mask)
    x5 = _load_rows(base, 8 * r + 5, length, stride_l, offs_d, d_mask)
    x6 = _load_rows(base, 8 * r + 6, length, stride_l, offs_d, d_mask)
    x7 = _load_rows(base, 8 * r + 7, length, stride_l, offs_d, d_mask)
    bh64 = bh.to(tl.int64)
    o2 = X2 + bh64 * ((length + 1) // 2) * head_dim
    o4 = X4 + bh64 * ((length + 3) // 4) * head_dim
    o8 = X8 + bh64 * ((length + 7) // 8) * head_dim
    s01 = x0 + x1
    s23 = x2 + x3
    s45 = x4 + x5
    s67 = x6 + x7
    _store_means(o2, s01, 4 * r + 0, length, offs_d, d_mask, head_dim, 2)
    _store_means(o2, s23, 4 * r + 1, length, offs_d, d_mask, head_dim, 2)
    _store_means(o2, s45, 4 * r + 2, length, offs_d, d_mask, head_dim, 2)
    _store_means(o2, s67, 4 * r + 3, length, offs_d, d_mask, head_dim, 2)
    s03 = s01 + s23
    s47 = s45 + s67
    _store_means(o4, s03, 2 * r + 0, length, offs_d, d_mask, head_dim, 4)
    _store_means(o4, s47, 2 * r + 1, length, offs_d, d_mask, head_dim, 4)
    _store_means(o8, s03 + s47, r, length, offs_d, d_mask, head_dim, 8)


@triton.jit
def _prefix_sum_kernel(X, PX, length, stride_b, stride_h, stride_l, n_heads, head_dim,
                       TILE: tl.constexpr, CHUNK_D: tl.constexpr):
    """``PX[b, h, t] = sum of X[b, h, :t]`` in float32, one program per (head, column chunk), walking the keys."""
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
        csum = tl.cumsum(x, axis=0) + running[None, :]
        tl.store(out_base + (rows[:, None] + 1) * head_dim + offs_d[None, :], csum, mask=ok)
        running += tl.sum(x, axis=0)
