"""Per-block statistics of ``x [B, H, L, D]`` in one Triton launch: block means and token self-similarity.

SpargeAttn's planner needs, for every block of queries and of keys, the mean of its tokens and the mean
pairwise cosine similarity of its tokens (``|sum of unit vectors|^2 / n^2``). In PyTorch that is a norm, a
weighted sum and a plain sum, each a pass over ``x`` plus a dozen small launches; here one program reads one
block once (in its own dtype, arithmetic in float32) and writes both. Keys can be centred first by a given
per-head vector (SpargeAttn's ``smooth_k``) without a centred copy of ``x``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vlmsparse.kernels.blocks import cdiv

__all__ = ["block_stats_triton"]


@triton.jit
def _block_stats_kernel(
    X, Center, Mean, Sim,
    stride_xb, stride_xh, stride_xl,
    n_heads, length, n_blocks, head_dim,
    HAS_CENTER: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
):
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < length
    d_ok = offs_d < head_dim
    ptrs = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh + rows[:, None] * stride_xl + offs_d[None, :]
    x = tl.load(ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    if HAS_CENTER:
        c = tl.load(Center + bh.to(tl.int64) * head_dim + offs_d, mask=d_ok, other=0.0)
        x = tl.where(row_ok[:, None], x - c[None, :], 0.0)
    count = tl.minimum(length - blk * BLOCK, BLOCK).to(tl.float32)
    inv_norm = 1.0 / tl.maximum(tl.sqrt(tl.sum(x * x, 1)), 1e-6)
    unit_sum = tl.sum(x * inv_norm[:, None], 0)
    out = bh.to(tl.int64) * n_blocks + blk
    tl.store(Mean + out * head_dim + offs_d, tl.sum(x, 0) / count, mask=d_ok)
    tl.store(Sim + out, tl.sum(unit_sum * unit_sum, 0) / (count * count))


def block_stats_triton(
    x: torch.Tensor, block: int, center: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block means (float32 ``[B, H, nB, D]``) and mean pairwise cosine similarity (float32 ``[B, H, nB]``).

    ``center``: ``[B, H, D]`` subtracted from every token first (or None). A partial last block averages
    over its own tokens. ``block`` must be a power of two.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [batch, heads, seq, head_dim], got shape {tuple(x.shape)}")
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block}")
    b, h, length, d = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    n_blocks = cdiv(length, block)
    mean = torch.empty(b, h, n_blocks, d, dtype=torch.float32, device=x.device)
    sim = torch.empty(b, h, n_blocks, dtype=torch.float32, device=x.device)
    if center is not None:
        if tuple(center.shape) != (b, h, d):
            raise ValueError(f"center must have shape {(b, h, d)}, got {tuple(center.shape)}")
        center = center.to(torch.float32).contiguous()
    block_d = max(16, triton.next_power_of_2(d))
    _block_stats_kernel[(n_blocks, b * h)](
        x, center if center is not None else mean, mean, sim,
        x.stride(0), x.stride(1), x.stride(2),
        h, length, n_blocks, d,
        HAS_CENTER=center is not None, BLOCK=block, BLOCK_D=block_d,
        num_warps=4 if block * block_d <= 8192 else 8,
    )
    return mean, sim
