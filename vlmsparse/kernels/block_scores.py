"""Strided antidiagonal block scores in one Triton pass (the importance estimate of XAttention and PSA).

Each ``S x S`` tile of the attention matrix is represented by the sum of its antidiagonal,
``t[a, c] = sum_i q[S a + S - 1 - i] . k[S c + i]`` (scaled by ``sm_scale / S``). Per tile row the tile logits are
softmaxed under the tile-level causal mask, and the probabilities are summed into ``block_m x block_n`` blocks:
``scores [B, Hq, nQB, nKB]`` (float32). This is exactly what ``vlmsparse.methods.scoring.antidiagonal_block_scores``
computes with PyTorch; here no tile-logit matrix is materialised.

One pass: a program owns ``TILE_M`` tile rows of one q-head and walks the visible tile columns with an online
softmax. Since a row's normaliser is only known at the end, it writes per (tile row, key block) partial sums
taken against its running maximum at the time, plus that maximum; a small epilogue rescales and sums them.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .blocks import cdiv

LOG2E = 1.4426950408889634


def antidiagonal_block_scores_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    stride: int,
    block_m: int,
    block_n: int,
    causal: bool = True,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Block attention mass estimated from strided antidiagonals: float32 ``[B, Hq, nQB, nKB]`` (see module doc)."""
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    if block_m % stride or block_n % stride:
        raise ValueError(f"stride ({stride}) must divide block_m ({block_m}) and block_n ({block_n})")
    n_qb, n_kb = cdiv(lq, block_m), cdiv(lk, block_n)
    rq, rk = block_m // stride, block_n // stride  # tile rows per query block, tile columns per key block
    tile_m = max(64, rq)
    tile_c = max(64, rk)
    n_rows = n_qb * rq  # tile rows (the last ones may hold no query: they score nothing)
    n_cols = n_kb * rk
    n_col_tiles = cdiv(n_cols, tile_c)
    blocks_per_col_tile = tile_c // rk
    scale = (1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)) / stride

    partial = torch.zeros(b * hq, n_rows, n_col_tiles * blocks_per_col_tile, device=q.device, dtype=torch.float32)
    m_snap = torch.full((b * hq, n_rows, n_col_tiles), float("-inf"), device=q.device, dtype=torch.float32)
    m_fin = torch.empty(b * hq, n_rows, device=q.device, dtype=torch.float32)
    l_fin = torch.empty(b * hq, n_rows, device=q.device, dtype=torch.float32)
    block_d = max(16, triton.next_power_of_2(d))
    grid = (cdiv(n_rows, tile_m), b * hq)
    _antidiagonal_kernel[grid](
        q, k, partial, m_snap, m_fin, l_fin,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        hq, hkv, lq, lk, d, n_rows, n_cols, n_col_tiles, scale * LOG2E,
        CAUSAL=causal, STRIDE=stride, RK=rk, TILE_M=tile_m, TILE_C=tile_c, BLOCK_D=block_d,
        UPCAST=(q.dtype == torch.float32 or q.device.type != "cuda"),
        num_warps=8 if tile_m * tile_c >= 128 * 128 else 4, num_stages=2,
    )
    # rescale each partial from the running maximum it was taken against to the row's final softmax
    weight = torch.exp2(m_snap - m_fin[..., None]) / l_fin[..., None]
    weight = torch.where(l_fin[..., None] > 0, weight, torch.zeros_like(weight))
    rows = partial.reshape(b * hq, n_rows, n_col_tiles, blocks_per_col_tile) * weight[..., None]
    rows = rows.reshape(b * hq, n_rows, -1)[..., :n_kb]
    return rows.reshape(b, hq, n_qb, rq, n_kb).sum(3)


@triton.jit
def _antidiagonal_kernel(
    Q, K, Partial, MSnap, MFin, LFin,
    stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
    n_q_heads, n_kv_heads, q_len, k_len, head_dim, n_rows, n_cols, n_col_tiles, qk_scale,
    CAUSAL: tl.constexpr, STRIDE: tl.constexpr, RK: tl.constexpr, TILE_M: tl.constexpr, TILE_C: tl.constexpr,
    BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
):
    row0 = tl.program_id(0) * TILE_M
    bh = tl.program_id(1)
    b = bh // n_q_heads
    h = bh % n_q_heads
    kvh = h // (n_q_heads // n_kv_heads)
    rows = row0 + tl.arange(0, TILE_M)  # tile rows a
    cols_in_tile = tl.arange(0, TILE_C)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + kvh * stride_kh
    offset = k_len - q_len
    row_ok = rows * STRIDE < q_len

    if CAUSAL:
        last_row = tl.minimum(row0 + TILE_M, n_rows) - 1
        last_col = (last_row * STRIDE + STRIDE - 1 + offset) // STRIDE
        col_tiles = tl.minimum((last_col + TILE_C) // TILE_C, n_col_tiles)
    else:
        col_tiles = n_col_tiles

    m_i = tl.full([TILE_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([TILE_M], dtype=tl.float32)
    part_base = Partial + bh.to(tl.int64) * n_rows * (n_col_tiles * (TILE_C // RK))
    snap_base = MSnap + bh.to(tl.int64) * n_rows * n_col_tiles
    for ct in range(0, col_tiles):
        cols = ct * TILE_C + cols_in_tile
        logits = tl.zeros([TILE_M, TILE_C], dtype=tl.float32)
        for i in tl.static_range(STRIDE):
            q_rows = rows * STRIDE + (STRIDE - 1 - i)
            k_rows = cols * STRIDE + i
            qi = tl.load(q_base + q_rows[:, None] * stride_qm + offs_d[None, :],
                         mask=(q_rows < q_len)[:, None] & d_mask[None, :], other=0.0)
            ki = tl.load(k_base + k_rows[:, None] * stride_kn + offs_d[None, :],
                         mask=(k_rows < k_len)[:, None] & d_mask[None, :], other=0.0)
            if UPCAST:
                logits += tl.dot(qi.to(tl.float32), tl.trans(ki.to(tl.float32)), input_precision="ieee")
            else:
                logits += tl.dot(qi, tl.trans(ki))
        keep = (cols * STRIDE < k_len)[None, :] & (cols < n_cols)[None, :]
        if CAUSAL:
            keep = keep & (cols[None, :] * STRIDE <= rows[:, None] * STRIDE + STRIDE - 1 + offset)
        s = tl.where(keep, logits * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        l_i = l_i * tl.math.exp2(m_i - m_safe) + tl.sum(p, 1)
        m_i = m_new
        per_block = tl.sum(tl.reshape(p, [TILE_M, TILE_C // RK, RK]), axis=2)
        blk = ct * (TILE_C // RK) + tl.arange(0, TILE_C // RK)
        ok = (rows < n_rows)[:, None]
        tl.store(part_base + rows[:, None] * (n_col_tiles * (TILE_C // RK)) + blk[None, :], per_block, mask=ok)
        tl.store(snap_base + rows * n_col_tiles + ct, m_safe, mask=rows < n_rows)
    l_i = tl.where(row_ok, l_i, 0.0)
    tl.store(MFin + bh.to(tl.int64) * n_rows + rows, tl.where(m_i == float("-inf"), 0.0, m_i), mask=rows < n_rows)
    tl.store(LFin + bh.to(tl.int64) * n_rows + rows, l_i, mask=rows < n_rows)
