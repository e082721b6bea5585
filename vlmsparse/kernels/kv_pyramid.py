"""The K/V pyramid: mean-pooled copies of K and V (groups of 2, 4, 8 keys) and, for tail aggregation, block sums.

Memory layout: one buffer per tensor, ``[B, Hkv, G2 + G4 + G8, D]``, the groups of 2 first, then those of 4, then
those of 8 (``Gp = ceil(Lk / p)``), so that the kernel's pooled loop can gather pooled keys of every level into
one tile from one base pointer. For tail aggregation, the sums of every key block's keys and values and its key
count in one float32 buffer (``[B, Hkv, nKB, 2 D + 1]``), what the kernel's launcher multiplies by a plan's skip
mask.
One Triton launch pools every level of K and V and writes the block sums; a plan with no pooled block (a binary
plan) needs only the block sums, which the same launch writes alone (``pooled=False``). Plain-PyTorch versions
define the result and serve CPU tensors without the Triton interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from .blocks import POOLED_LEVELS, VALID_BLOCK_SIZES, cdiv
from .pdl import pdl_ok, release_dependents
from .validation import triton_can_run

_POOL_TILE = 128  # keys per program of the pooling kernel (a multiple of 8 and of every block size)


def level_offsets(k_len: int) -> dict[int, int]:
    """Row where each level's groups start in the concatenated pyramid, and the total (key ``0``)."""
    g2, g4, g8 = cdiv(k_len, 2), cdiv(k_len, 4), cdiv(k_len, 8)
    return {2: 0, 4: g2, 8: g2 + g4, 0: g2 + g4 + g8}


@dataclass
class KVPyramid:
    """Mean-pooled copies of K and V, and (for tail aggregation) the sums of each key block.

    ``pooled_k_all`` / ``pooled_v_all``: ``[B, Hkv, G2 + G4 + G8, D]`` in the dtype of K, contiguous (``None``
    in a pyramid built with ``pooled=False``: block sums only, for binary plans with tail aggregation);
    ``pooled_k[p]`` / ``pooled_v[p]`` are views of level ``p`` (``[B, Hkv, ceil(Lk / p), D]``).
    ``block_sums``: ``[B, Hkv, ceil(Lk / block_n), 2 D + 1]`` float32, per key block the sum of its keys, the sum
    of its values and its key count (``None`` without tail); ``block_sum_k`` / ``block_sum_v`` are views of the
    first two.
    Build it once per call with :func:`build_kv_pyramid`, or once per layer and pass it to several calls.
    """

    k_len: int
    pooled_k_all: torch.Tensor | None
    pooled_v_all: torch.Tensor | None
    block_n: int | None = None
    block_sums: torch.Tensor | None = None
    _views: tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _level_views(self) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        # made on first use: the kernel reads the whole buffers, and six views made per call cost 13 us of host
        # time (measured on a CPU)
        if self._views is None:
            if not self.has_pooled:
                raise ValueError("this pyramid holds block sums only (built with pooled=False); rebuild it with "
                                 "build_kv_pyramid(k, v) for its pooled levels")
            off = level_offsets(self.k_len)
            ks, vs = {}, {}
            for p in POOLED_LEVELS:
                n = cdiv(self.k_len, p)
                ks[p] = self.pooled_k_all[:, :, off[p] : off[p] + n]
                vs[p] = self.pooled_v_all[:, :, off[p] : off[p] + n]
            self._views = (ks, vs)
        return self._views

    @property
    def pooled_k(self) -> dict[int, torch.Tensor]:
        return self._level_views()[0]

    @property
    def pooled_v(self) -> dict[int, torch.Tensor]:
        return self._level_views()[1]

    @property
    def block_sum_k(self) -> torch.Tensor | None:
        return None if self.block_sums is None else self.block_sums[..., : self.head_dim]

    @property
    def block_sum_v(self) -> torch.Tensor | None:
        d = self.head_dim
        return None if self.block_sums is None else self.block_sums[..., d : 2 * d]

    @property
    def head_dim(self) -> int:
        if self.pooled_k_all is not None:
            return self.pooled_k_all.shape[-1]
        return (self.block_sums.shape[-1] - 1) // 2

    @property
    def has_pooled(self) -> bool:
        """Whether the pooled copies were built (``False``: block sums only)."""
        return self.pooled_k_all is not None

    def has_block_sums(self, block_n: int) -> bool:
        return self.block_sums is not None and self.block_n == block_n


def _check_build_args(tail: bool, block_n: int, pooled: bool) -> None:
    if tail and block_n not in VALID_BLOCK_SIZES:
        raise ValueError(f"block_n must be one of {VALID_BLOCK_SIZES}, got {block_n!r}")
    if not pooled and not tail:
        raise ValueError("build_kv_pyramid(pooled=False) builds block sums only and needs tail=True; without tail "
                         "a plan with no pooled block needs no pyramid")


def build_kv_pyramid(
    k: torch.Tensor, v: torch.Tensor, *, tail: bool = False, block_n: int = 128, pooled: bool = True
) -> KVPyramid:
    """Pool K and V in groups of 2, 4 and 8 keys (a partial last group is the mean of its own keys).

    With ``tail=True`` also the sums of every ``block_n`` keys and values and their counts (float32), which
    tail aggregation reads. ``pooled=False`` (with ``tail=True``): the block sums alone, all that a plan without
    pooled blocks needs.
    """
    _check_build_args(tail, block_n, pooled)
    if not triton_can_run(k.device):
        return build_kv_pyramid_torch(k, v, tail=tail, block_n=block_n, pooled=pooled)
    b, h, length, d = k.shape
    total = level_offsets(length)[0]
    n_kb = cdiv(length, block_n)
    out = [torch.empty(b, h, total, d, device=k.device, dtype=k.dtype) for _ in range(2)] if pooled else [None, None]
    sums = torch.empty(b, h, n_kb, 2 * d + 1, device=k.device, dtype=torch.float32) if tail else None
    block_d = max(16, triton.next_power_of_2(d))
    dummy = k  # never written: a pointer argument for what is not built
    # one launch for both tensors (the third grid axis picks K or V); keys' sums in columns [0, D) with their
    # counts in column 2 D, values' sums in [D, 2 D)
    _pool_kernel[(cdiv(length, _POOL_TILE), b * h, 2)](
        k, v, out[0] if pooled else dummy, out[1] if pooled else dummy, sums if tail else dummy, length,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), h, d, n_kb,
        BLOCK_D=block_d, TILE=_POOL_TILE, POOLED=pooled, BLOCK_SUMS=tail, BLOCK_N=block_n if tail else 128,
        RELEASE=pdl_ok(k.device),
    )
    return KVPyramid(length, out[0], out[1], block_n if tail else None, sums)


def build_kv_pyramid_torch(
    k: torch.Tensor, v: torch.Tensor, *, tail: bool = False, block_n: int = 128, pooled: bool = True
) -> KVPyramid:
    """:func:`build_kv_pyramid` in plain PyTorch (the definition; used for CPU tensors)."""
    _check_build_args(tail, block_n, pooled)
    b, h, length, d = k.shape
    out = [None, None]
    for i, src in enumerate((k, v) if pooled else ()):
        levels = []
        for p in POOLED_LEVELS:
            groups = cdiv(length, p)
            pad = groups * p - length
            counts = torch.clamp(length - torch.arange(groups, device=k.device) * p, max=p).to(torch.float32)
            x = torch.nn.functional.pad(src, (0, 0, 0, pad)) if pad else src
            s = x.reshape(b, h, groups, p, d).sum(-2, dtype=torch.float32)
            levels.append((s / counts[:, None]).to(src.dtype))
        out[i] = torch.cat(levels, dim=2).contiguous()
    sums = None
    if tail:
        n_kb = cdiv(length, block_n)
        pad = n_kb * block_n - length
        parts = [
            (torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x).reshape(b, h, n_kb, block_n, d)
            .sum(-2, dtype=torch.float32)
            for x in (k, v)
        ]
        counts = torch.clamp(length - torch.arange(n_kb, device=k.device) * block_n, max=block_n)
        parts.append(counts.to(torch.float32)[:, None].expand(b, h, n_kb, 1))
        sums = torch.cat(parts, -1).contiguous()
    return KVPyramid(length, out[0], out[1], block_n if tail else None, sums)


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
def _pool_kernel(K, V, KP, VP, XS, length, stride_kb, stride_kh, stride_kl, stride_vb, stride_vh, stride_vl,
                 n_heads, head_dim, n_kb, BLOCK_D: tl.constexpr, TILE: tl.constexpr, POOLED: tl.constexpr,
                 BLOCK_SUMS: tl.constexpr, BLOCK_N: tl.constexpr, RELEASE: tl.constexpr):
    """Pool ``TILE`` keys of one head of K (``program_id(2) == 0``) or V at levels 2, 4 and 8 (with ``POOLED``) and,
    with ``BLOCK_SUMS``, sum each key block into rows of ``2 * head_dim + 1`` float32 of ``XS``: K's sums in columns
    ``[0, D)`` with the block's key count in column ``2 * head_dim``, V's in ``[D, 2 D)``.

    The tile is read as 8 interleaved row sets (rows ``8 r + i``), so every group sum is an elementwise add of
    whole rows held by the same threads: no data moves between threads (a reshape-and-sum over rows did;
    timings in notes/kernel.md). ``RELEASE``: a chained launch after this one may start at once (its programs wait
    for this launch's end before they read the pyramid: :mod:`vlmsparse.kernels.pdl`).
    """
    release_dependents(RELEASE)
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    is_k = tl.program_id(2) == 0
    b = bh // n_heads
    h = bh % n_heads
    R: tl.constexpr = TILE // 8
    r = tile * R + tl.arange(0, R)  # level-8 group of each row set's row
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    if is_k:
        base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
        stride_l = stride_kl
        xp = KP
    else:
        base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
        stride_l = stride_vl
        xp = VP
    x0 = _load_rows(base, 8 * r + 0, length, stride_l, offs_d, d_mask)
    x1 = _load_rows(base, 8 * r + 1, length, stride_l, offs_d, d_mask)
    x2 = _load_rows(base, 8 * r + 2, length, stride_l, offs_d, d_mask)
    x3 = _load_rows(base, 8 * r + 3, length, stride_l, offs_d, d_mask)
    x4 = _load_rows(base, 8 * r + 4, length, stride_l, offs_d, d_mask)
    x5 = _load_rows(base, 8 * r + 5, length, stride_l, offs_d, d_mask)
    x6 = _load_rows(base, 8 * r + 6, length, stride_l, offs_d, d_mask)
    x7 = _load_rows(base, 8 * r + 7, length, stride_l, offs_d, d_mask)
    s01 = x0 + x1
    s23 = x2 + x3
    s45 = x4 + x5
    s67 = x6 + x7
    s03 = s01 + s23
    s47 = s45 + s67
    s8 = s03 + s47
    if POOLED:
        g2 = (length + 1) // 2
        g4 = (length + 3) // 4
        g8 = (length + 7) // 8
        o2 = xp + bh.to(tl.int64) * (g2 + g4 + g8) * head_dim
        o4 = o2 + g2 * head_dim
        o8 = o4 + g4 * head_dim
        _store_means(o2, s01, 4 * r + 0, length, offs_d, d_mask, head_dim, 2)
        _store_means(o2, s23, 4 * r + 1, length, offs_d, d_mask, head_dim, 2)
        _store_means(o2, s45, 4 * r + 2, length, offs_d, d_mask, head_dim, 2)
        _store_means(o2, s67, 4 * r + 3, length, offs_d, d_mask, head_dim, 2)
        _store_means(o4, s03, 2 * r + 0, length, offs_d, d_mask, head_dim, 4)
        _store_means(o4, s47, 2 * r + 1, length, offs_d, d_mask, head_dim, 4)
        _store_means(o8, s8, r, length, offs_d, d_mask, head_dim, 8)
    if BLOCK_SUMS:
        # sums of whole key blocks: BLOCK_N // 8 consecutive level-8 groups each (exact float32 sums)
        PER: tl.constexpr = BLOCK_N // 8
        NB: tl.constexpr = R // PER
        bs = tl.sum(tl.reshape(s8, (NB, PER, BLOCK_D)), 1)
        kb = tile * NB + tl.arange(0, NB)
        row = (bh.to(tl.int64) * n_kb + kb) * (2 * head_dim + 1)
        col0 = tl.where(is_k, 0, head_dim)
        tl.store(XS + row[:, None] + col0 + offs_d[None, :], bs, mask=(kb < n_kb)[:, None] & d_mask[None, :])
        if is_k:
            count = tl.minimum(length - kb * BLOCK_N, BLOCK_N).to(tl.float32)
            tl.store(XS + row + 2 * head_dim, count, mask=kb < n_kb)
