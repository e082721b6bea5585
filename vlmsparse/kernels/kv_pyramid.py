"""The K/V pyramid: mean-pooled copies of K and V (groups of 2, 4, 8 keys), and prefix sums for tail aggregation.

One Triton launch pools K and V at every level; for tail aggregation, a two-launch parallel scan writes their
float32 prefix sums. Plain-PyTorch versions define the result and serve CPU tensors without the Triton interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .blocks import POOLED_LEVELS, cdiv
from .validation import triton_can_run

_POOL_TILE = 128  # keys per program of the pooling kernel (a multiple of 8)
_PREFIX_CHUNK = 128  # keys per program of the prefix-sum kernels
_PREFIX_SUMS_TILE = 64  # chunk sums read per step when a program adds up the chunks before its own


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
            prefix_sums_into(src, dst)
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


def prefix_sums_into(x: torch.Tensor, out: torch.Tensor, *, chunk: int = _PREFIX_CHUNK,
                     sums_tile: int = _PREFIX_SUMS_TILE) -> None:
    """Write ``out[b, h, t] = sum of x[b, h, :t]`` (float32, ``out`` contiguous ``[B, H, L + 1, D]``).

    A two-launch parallel scan: every chunk of ``chunk`` keys writes its column sums, then every chunk adds the
    sums of the chunks before it to its own running sum. Both launches have one program per (chunk, head).
    """
    b, h, length, d = x.shape
    n_chunks = cdiv(length, chunk)
    block_d = max(16, triton.next_power_of_2(d))
    sums = torch.empty(b * h, n_chunks, d, device=x.device, dtype=torch.float32)
    grid = (n_chunks, b * h)
    strides = (x.stride(0), x.stride(1), x.stride(2))
    _chunk_sums_kernel[grid](x, sums, length, *strides, h, d, n_chunks, BLOCK_D=block_d, CHUNK=chunk)
    _chunk_prefix_kernel[grid](
        x, sums, out, length, *strides, h, d, n_chunks, BLOCK_D=block_d, CHUNK=chunk, SUMS_TILE=sums_tile,
    )


@triton.jit
def _chunk_sums_kernel(X, S, length, stride_b, stride_h, stride_l, n_heads, head_dim, n_chunks,
                       BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    """``S[bh, c] = sum of the keys in chunk c`` (float32)."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    base = X + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    x = _load_rows(base, c * CHUNK + tl.arange(0, CHUNK), length, stride_l, offs_d, d_mask)
    tl.store(S + (bh.to(tl.int64) * n_chunks + c) * head_dim + offs_d, tl.sum(x, axis=0), mask=d_mask)


@triton.jit
def _chunk_prefix_kernel(X, S, PX, length, stride_b, stride_h, stride_l, n_heads, head_dim, n_chunks,
                         BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, SUMS_TILE: tl.constexpr):
    """Rows ``c * CHUNK + 1 ..`` of the prefix sums: the sums of chunks ``< c`` plus a scan inside chunk c."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    s_base = S + bh.to(tl.int64) * n_chunks * head_dim
    before = tl.zeros([BLOCK_D], dtype=tl.float32)
    for c0 in range(0, c, SUMS_TILE):
        rows = c0 + tl.arange(0, SUMS_TILE)
        ok = (rows < c)[:, None] & d_mask[None, :]
        before += tl.sum(tl.load(s_base + rows[:, None] * head_dim + offs_d[None, :], mask=ok, other=0.0), axis=0)
    base = X + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
    rows = c * CHUNK + tl.arange(0, CHUNK)
    x = _load_rows(base, rows, length, stride_l, offs_d, d_mask)
    out_base = PX + bh.to(tl.int64) * (length + 1) * head_dim
    csum = tl.cumsum(x, axis=0) + before[None, :]
    tl.store(out_base + (rows[:, None] + 1) * head_dim + offs_d[None, :], csum,
             mask=(rows < length)[:, None] & d_mask[None, :])
    if c == 0:
        tl.store(out_base + offs_d, tl.zeros([BLOCK_D], dtype=tl.float32), mask=d_mask)
