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

_POOL_TILE = 64  # keys per program of the pooling kernel (a multiple of 8)
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
def _pool_store(x, out_base, tile, length, offs_d, d_mask, head_dim, P: tl.constexpr, TILE: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """Store the means of ``x [TILE, BLOCK_D]`` over groups of ``P`` rows (float32 in, dtype of out_base)."""
    sums = tl.sum(tl.reshape(x, [TILE // P, P, BLOCK_D]), axis=1)
    g = tile * (TILE // P) + tl.arange(0, TILE // P)
    count = tl.minimum(length - g * P, P).to(tl.float32)
    means = sums / tl.maximum(count, 1.0)[:, None]
    n_groups = (length + P - 1) // P
    tl.store(out_base + g[:, None] * head_dim + offs_d[None, :], means.to(out_base.dtype.element_ty),
             mask=(g < n_groups)[:, None] & d_mask[None, :])


@triton.jit
def _pool_kernel(X, X2, X4, X8, length, stride_b, stride_h, stride_l, n_heads, head_dim,
                 BLOCK_D: tl.constexpr, TILE: tl.constexpr):
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    rows = tile * TILE + tl.arange(0, TILE)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    x = tl.load(X + b * stride_b + h * stride_h + rows[:, None] * stride_l + offs_d[None, :],
                mask=(rows < length)[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
    bh64 = bh.to(tl.int64)
    _pool_store(x, X2 + bh64 * ((length + 1) // 2) * head_dim, tile, length, offs_d, d_mask, head_dim, 2, TILE, BLOCK_D)
    _pool_store(x, X4 + bh64 * ((length + 3) // 4) * head_dim, tile, length, offs_d, d_mask, head_dim, 4, TILE, BLOCK_D)
    _pool_store(x, X8 + bh64 * ((length + 7) // 8) * head_dim, tile, length, offs_d, d_mask, head_dim, 8, TILE, BLOCK_D)


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
