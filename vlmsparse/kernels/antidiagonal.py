"""The strided antidiagonal block estimate: its plain-PyTorch definition (``antidiagonal_block_scores``, at the
end of this file) and the Triton kernels that are its GPU path.

With ``S = stride``, tile row ``a`` holds queries ``S a .. S a + S - 1`` and tile column ``c`` keys
``S c .. S c + S - 1``; the tile logit ``sum_i q[S a + S - 1 - i] . k[S c + i]`` is a GEMM of ``Lq / S`` rows
against ``Lk / S`` columns over ``S * D``. Its softmax over the visible columns of each tile row is summed
into ``[B, Hq, nQB, nKB]`` blocks.

Two launches:

1. One program per (``BLOCK_R x BLOCK_C`` tile of tile logits, query head); only the tiles that meet the causal
   triangle are launched, listed row by row in a small int32 table built once per geometry (cached). The
   program runs a plain GEMM loop over ``S * D`` in chunks of ``BLOCK_K``: chunk ``j`` of the reduction pairs
   query ``S a + j`` with key ``S c + S - 1 - j``, so both operands are ordinary ``[BLOCK, BLOCK_K]`` pointer
   loads (row stride ``S`` rows), unmasked when the lengths fill whole tiles. The epilogue masks invisible
   tiles (causal, past ``Lk``, rows past ``Lq``), takes each row's maximum over the tile, and stores the
   tile's row maximum, its row sum of ``exp2(logit - max)`` and those sums per key block into float32
   scratch (tile-major, ``[B * Hq, n_tiles, Lq / S, BLOCK_C / (block_n / S)]``: ``[B, Hq, Lq / S, nKB]``
   floats padded to whole tiles).
2. One program per (``BLOCK_R`` tile rows, query head) combines its tiles: the row maximum ``m`` over the tile
   maxima, the normaliser ``z = sum_t exp2(max_t - m) * sum_t``, then each block sum is rescaled by
   ``exp2(max_t - m) / z`` and the tile rows of a query block are added. Rows that see nothing give 0; key
   blocks past the visible tiles are written as 0.

The estimate was one kernel before (tag ``antidiagonal-rows``, commit f32a923): one program took ``BLOCK_R``
tile rows of one query head and walked its visible column tiles, so its work grew along the causal triangle and
left the GPU unevenly loaded; on an H200 the two launches took 76 vs 125 us at 8k tokens and 994 vs 1214 us at
32k (stride 8).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from vlmsparse.kernels.blocks import cdiv

__all__ = ["antidiagonal_block_scores", "antidiagonal_block_scores_triton", "triton_supports", "DEFAULT_MAX_ELEMENTS"]

LOG2E = 1.4426950408889634


@triton.jit
def _split_tiles_kernel(
    Q, K, Table, Scratch, TileMax, TileSum,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    n_q_heads, n_kv_heads, q_len, k_len, n_rows_pad, n_ct, n_rb, n_pairs,
    scale_log2,
    CAUSAL: tl.constexpr, STRIDE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, RK: tl.constexpr,
    EVEN_Q: tl.constexpr, EVEN_K: tl.constexpr,
):
    """Pass 1: one ``BLOCK_R x BLOCK_C`` tile of antidiagonal logits (a GEMM over
    ``STRIDE * HEAD_DIM``) and its softmax epilogue against the tile's own row maximum."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_q_heads
    h = bh % n_q_heads
    kvh = h // (n_q_heads // n_kv_heads)
    r_blk = tl.load(Table + n_rb + pid)
    c_blk = tl.load(Table + n_rb + n_pairs + pid)
    NB: tl.constexpr = BLOCK_C // RK  # key blocks per column tile
    CPR: tl.constexpr = (HEAD_DIM + BLOCK_K - 1) // BLOCK_K  # K chunks per query (key) row
    EVEN_D: tl.constexpr = HEAD_DIM % BLOCK_K == 0

    rows = r_blk * BLOCK_R + tl.arange(0, BLOCK_R)  # tile rows
    cols = c_blk * BLOCK_C + tl.arange(0, BLOCK_C)  # tile columns
    offs_k = tl.arange(0, BLOCK_K)
    q_ptrs = (Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
              + (rows * STRIDE)[:, None] * stride_qm + offs_k[None, :])
    k_ptrs = (K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
              + (cols * STRIDE)[:, None] * stride_kn + offs_k[None, :])

    # logit(a, c) = sum_j q[S a + j] . k[S c + S - 1 - j]; step kk covers dims d0 .. d0 + BLOCK_K of query j
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for kk in range(0, STRIDE * CPR):
        j = kk // CPR
        d0 = (kk % CPR) * BLOCK_K
        q_off = j * stride_qm + d0
        k_off = (STRIDE - 1 - j) * stride_kn + d0
        if EVEN_Q and EVEN_K and EVEN_D:
            qt = tl.load(q_ptrs + q_off)
            kt = tl.load(k_ptrs + k_off)
        else:
            d_ok = (d0 + offs_k < HEAD_DIM)[None, :]
            q_ok = (rows * STRIDE + j < q_len)[:, None]
            k_ok = (cols * STRIDE + (STRIDE - 1 - j) < k_len)[:, None]
            qt = tl.load(q_ptrs + q_off, mask=q_ok & d_ok, other=0.0)
            kt = tl.load(k_ptrs + k_off, mask=k_ok & d_ok, other=0.0)
        acc = tl.dot(qt, tl.trans(kt), acc)

    logits = acc * scale_log2
    keep = (cols[None, :] * STRIDE < k_len) & (rows[:, None] * STRIDE < q_len)
    if CAUSAL:
        keep = keep & (cols[None, :] * STRIDE <= rows[:, None] * STRIDE + STRIDE - 1 + (k_len - q_len))
    logits = tl.where(keep, logits, float("-inf"))
    m_t = tl.max(logits, 1)
    m_t_safe = tl.where(m_t == float("-inf"), 0.0, m_t)
    p = tl.math.exp2(logits - m_t_safe[:, None])
    sums = tl.sum(tl.reshape(p, (BLOCK_R, NB, RK)), 2)  # [BLOCK_R, NB]
    # tile-major layout [B * Hq, n_ct, n_rows_pad, (NB)]: one contiguous piece per program
    base = (bh.to(tl.int64) * n_ct + c_blk) * n_rows_pad
    tl.store(Scratch + (base + rows)[:, None] * NB + tl.arange(0, NB)[None, :], sums)
    tl.store(TileMax + base + rows, m_t)  # -inf where the row sees nothing of this tile
    tl.store(TileSum + base + rows, tl.sum(sums, 1))


@triton.jit
def _split_reduce_kernel(
    Table, Scratch, TileMax, TileSum, Out,
    n_rows_pad, n_ct, n_qb, n_kb,
    BLOCK_R: tl.constexpr, ROWS: tl.constexpr, TC: tl.constexpr, NB: tl.constexpr, RQ: tl.constexpr,
):
    """Pass 2: for ``ROWS`` tile rows (inside one pass-1 row block of ``BLOCK_R``), the
    softmax maximum and normaliser over their tiles, then the rescaled block sums summed into query blocks,
    ``TC`` column tiles per step (zeros past the visible tiles)."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    QB: tl.constexpr = ROWS // RQ  # query blocks per program
    n_vis = tl.load(Table + (pid * ROWS) // BLOCK_R)  # column tiles pass 1 wrote for these rows
    rows = pid * ROWS + tl.arange(0, ROWS)
    head = bh.to(tl.int64) * n_ct * n_rows_pad
    offs_t = tl.arange(0, TC)

    m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    z_i = tl.zeros([ROWS], dtype=tl.float32)
    for t0 in range(0, n_vis, TC):
        ts = t0 + offs_t
        at = head + ts[:, None] * n_rows_pad + rows[None, :]  # [TC, ROWS]
        mt = tl.load(TileMax + at, mask=(ts < n_vis)[:, None], other=float("-inf"))
        st = tl.load(TileSum + at, mask=(ts < n_vis)[:, None], other=0.0)
        m_new = tl.maximum(m_i, tl.max(mt, 0))
        m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        z_i = z_i * tl.math.exp2(m_i - m_new_safe) + tl.sum(st * tl.math.exp2(mt - m_new_safe[None, :]), 0)
        m_i = m_new
    m_fin = tl.where(m_i == float("-inf"), 0.0, m_i)
    inv_z = tl.where(z_i > 0.0, 1.0 / tl.maximum(z_i, 1e-30), 0.0)

    qbs = pid * QB + tl.arange(0, QB)
    offs_nb = tl.arange(0, NB)
    out_base = Out + bh.to(tl.int64) * n_qb * n_kb
    for t0 in range(0, n_ct, TC):
        ts = t0 + offs_t
        vis = (ts < n_vis)[:, None]
        at = head + ts[:, None] * n_rows_pad + rows[None, :]  # [TC, ROWS]
        mt = tl.load(TileMax + at, mask=vis, other=float("-inf"))
        w = tl.math.exp2(mt - m_fin[None, :]) * inv_z[None, :]  # 0 where a row sees nothing of a tile
        sums = tl.load(Scratch + at[:, :, None] * NB + offs_nb[None, None, :], mask=vis[:, :, None], other=0.0)
        grouped = tl.sum(tl.reshape(sums * w[:, :, None], (TC, QB, RQ, NB)), 2)  # [TC, QB, NB]
        kbs = ts[:, None, None] * NB + offs_nb[None, None, :]  # [TC, 1, NB]
        tl.store(out_base + qbs[None, :, None] * n_kb + kbs, grouped,
                 mask=(qbs[None, :, None] < n_qb) & (kbs < n_kb))


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def triton_supports(q: torch.Tensor, stride: int, block_m: int, block_n: int) -> bool:
    """Whether the fused kernel handles these shapes (power-of-two stride and blocks, head_dim <= 256)."""
    return _is_pow2(stride) and _is_pow2(block_m) and _is_pow2(block_n) and q.shape[-1] <= 256


def antidiagonal_block_scores_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    stride: int,
    block_m: int,
    block_n: int,
    causal: bool = True,
    sm_scale: float | None = None,
    block_r: int | None = None,
    block_c: int | None = None,
    num_warps: int | None = None,
    num_stages: int = 3,
    block_k: int | None = None,
) -> torch.Tensor:
    """Same result as :func:`antidiagonal_block_scores`, computed by Triton kernels.

    Each ``block_r x block_c`` tile of tile logits is computed in its own program, then the tiles of a row are
    reduced in a second launch.
    ``block_r`` / ``block_c``: tile rows / tile columns per program (powers of two, multiples of
    ``block_m / stride`` and ``block_n / stride``); ``block_k``: reduction chunk of pass 1 (a power of
    two >= 16); tuning knobs only.
    """
    d = q.shape[-1]
    scale = (1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)) / stride
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    return _scores_split(q, k, stride=stride, block_m=block_m, block_n=block_n, causal=causal, scale=scale,
                         block_r=block_r, block_c=block_c, block_k=block_k, num_warps=num_warps, num_stages=num_stages)


@functools.lru_cache(maxsize=64)
def _split_table(
    n_rb: int, n_ct: int, block_r: int, block_c: int, stride: int, n_cols: int, offset: int, causal: bool,
    device: torch.device,
) -> tuple[torch.Tensor, int]:
    """int32 ``[n_rb + 2 P]``: visible column tiles per row block, then the row and column block of each of the
    ``P`` (row block, column tile) pairs pass 1 computes, row by row. Built once per geometry and device."""
    if causal:
        n_vis = []
        for r in range(n_rb):
            # last key the block's last tile row sees: tile (a, c) is visible when c S <= a S + S - 1 + offset
            limit = (r * block_r + block_r - 1) * stride + stride - 1 + offset
            col_end = min(n_cols, limit // stride + 1) if limit >= 0 else 0
            n_vis.append(cdiv(col_end, block_c))
    else:
        n_vis = [n_ct] * n_rb
    pair_r = [r for r in range(n_rb) for _ in range(n_vis[r])]
    pair_c = [c for r in range(n_rb) for c in range(n_vis[r])]
    table = torch.tensor(n_vis + pair_r + pair_c, dtype=torch.int32).to(device)
    return table, len(pair_r)


def _scores_split(q, k, *, stride, block_m, block_n, causal, scale, block_r, block_c, block_k, num_warps,
                  num_stages):
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    rq, rk = block_m // stride, block_n // stride
    n_qb, n_kb = cdiv(lq, block_m), cdiv(lk, block_n)
    block_r = max(block_r or 128, rq)
    block_c = max(block_c or 128, rk)
    block_k = min(block_k or 64, max(16, triton.next_power_of_2(d)))
    num_warps = num_warps or 8
    n_rows = n_qb * rq
    n_rows_pad = cdiv(n_rows, block_r) * block_r
    n_rb = n_rows_pad // block_r
    n_cols = n_kb * rk
    n_ct = cdiv(n_cols, block_c)
    nb = block_c // rk
    table, n_pairs = _split_table(n_rb, n_ct, block_r, block_c, stride, n_cols, lk - lq, causal, q.device)
    scratch = torch.empty(b * hq, n_ct, n_rows_pad, nb, dtype=torch.float32, device=q.device)
    tile_max = torch.empty(b * hq, n_ct, n_rows_pad, dtype=torch.float32, device=q.device)
    tile_sum = torch.empty(b * hq, n_ct, n_rows_pad, dtype=torch.float32, device=q.device)
    out = torch.empty(b, hq, n_qb, n_kb, dtype=torch.float32, device=q.device)
    if n_pairs:
        _split_tiles_kernel[(n_pairs, b * hq)](
            q, k, table, scratch, tile_max, tile_sum,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            hq, hkv, lq, lk, n_rows_pad, n_ct, n_rb, n_pairs,
            scale * LOG2E,
            CAUSAL=causal, STRIDE=stride, HEAD_DIM=d, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_K=block_k, RK=rk,
            EVEN_Q=lq == n_rows_pad * stride, EVEN_K=lk == n_ct * block_c * stride,
            num_warps=num_warps, num_stages=num_stages,
        )
    rows2 = max(rq, min(block_r, 64))  # tile rows per reduction program
    tc = max(1, min(8, triton.next_power_of_2(n_ct), 4096 // (rows2 * nb)))  # column tiles per step
    _split_reduce_kernel[(n_rows_pad // rows2, b * hq)](
        table, scratch, tile_max, tile_sum, out,
        n_rows_pad, n_ct, n_qb, n_kb,
        BLOCK_R=block_r, ROWS=rows2, TC=tc, NB=nb, RQ=rq,
        num_warps=4,
    )
    return out


#: Largest tile-logit tensor the antidiagonal estimate materialises at once (elements); bigger inputs are
#: processed in chunks of query blocks.
DEFAULT_MAX_ELEMENTS = 1 << 26


def _pad_len(x: torch.Tensor, length: int, mode: str = "zeros") -> torch.Tensor:
    pad = length - x.shape[-2]
    if pad <= 0:
        return x
    if mode == "replicate":
        return torch.cat([x, x[..., -1:, :].expand(*x.shape[:-2], pad, x.shape[-1])], dim=-2)
    return torch.nn.functional.pad(x, (0, 0, 0, pad))


def antidiagonal_block_scores(
    q: torch.Tensor, k: torch.Tensor, *, stride: int, block_m: int, block_n: int, causal: bool = True,
    sm_scale: float | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS, use_triton: bool | None = None,
) -> torch.Tensor:
    """Attention mass per block estimated from strided antidiagonals: float32 ``[B, Hq, nQB, nKB]``.

    Row ``I`` sums to the number of tile rows (``block_m / stride``, fewer in a partial last block); only the
    relative sizes within a row matter to the planners. Query tile rows past ``Lq`` contribute nothing.
    On CUDA (``use_triton=None``) a fused Triton kernel computes the same thing without materialising tile
    logits; elsewhere (or with ``use_triton=False``) plain PyTorch does, in chunks of ``max_elements``.
    """
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    if block_m % stride or block_n % stride:
        raise ValueError(f"stride ({stride}) must divide block_m ({block_m}) and block_n ({block_n})")
    if use_triton is None:
        use_triton = q.device.type == "cuda" and triton_supports(q, stride, block_m, block_n)
    if use_triton:
        return antidiagonal_block_scores_triton(
            q, k, stride=stride, block_m=block_m, block_n=block_n, causal=causal, sm_scale=sm_scale
        )
    group = hq // hkv
    n_qb, n_kb = cdiv(lq, block_m), cdiv(lk, block_n)
    rq, rk = block_m // stride, block_n // stride  # tile rows per query block, tile columns per key block
    scale = (1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)) / stride
    offset = lk - lq
    compute_dtype = q.dtype if q.device.type == "cuda" else torch.float32

    # q tile rows: the S queries of a tile in reverse order, side by side; k tile columns: S keys in order.
    qp = _pad_len(q, n_qb * block_m).to(compute_dtype)
    q_r = qp.reshape(b, hkv, group, n_qb * rq, stride, d).flip(-2).reshape(b, hkv, group * n_qb * rq, stride * d)
    kp = _pad_len(k, n_kb * block_n).to(compute_dtype)
    k_r = kp.reshape(b, hkv, n_kb * rk, stride * d)

    tile_row = torch.arange(n_qb * rq, device=q.device)
    tile_col = torch.arange(n_kb * rk, device=q.device)
    row_ok = tile_row * stride < lq  # the tile holds at least one real query
    col_ok = tile_col * stride < lk
    out = torch.empty(b, hq, n_qb, n_kb, dtype=torch.float32, device=q.device)
    per_row = b * hq * n_kb * rk * rq  # elements per query block
    chunk = max(1, min(n_qb, max_elements // max(per_row, 1)))
    q_r = q_r.reshape(b, hkv, group, n_qb * rq, stride * d)
    for qb0 in range(0, n_qb, chunk):  # chunks of query blocks bound memory; one iteration at modest sizes
        qb1 = min(qb0 + chunk, n_qb)
        rows = tile_row[qb0 * rq : qb1 * rq]
        if causal:  # key blocks beyond the chunk's last visible key contribute nothing
            last_key = min(qb1 * block_m, lq) - 1 + offset
            kb_end = min(n_kb, last_key // block_n + 1)
        else:
            kb_end = n_kb
        cols = tile_col[: kb_end * rk]
        qc = q_r[:, :, :, qb0 * rq : qb1 * rq].reshape(b, hkv, -1, stride * d)
        logits = torch.matmul(qc, k_r[:, :, : kb_end * rk].transpose(-1, -2)).float() * scale
        logits = logits.reshape(b, hq, len(rows), len(cols))
        keep = col_ok[: len(cols)][None, :].expand(len(rows), -1)
        if causal:
            # tile (a, c) is visible when its first key is at or before its last query's causal limit
            keep = keep & (cols[None, :] * stride <= rows[:, None] * stride + stride - 1 + offset)
        logits = logits.masked_fill(~keep, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        probs = torch.nan_to_num(probs, nan=0.0) * row_ok[qb0 * rq : qb1 * rq, None].to(probs.dtype)
        sums = probs.reshape(b, hq, qb1 - qb0, rq, kb_end, rk).sum((3, 5))
        out[:, :, qb0:qb1, :kb_end] = sums
        out[:, :, qb0:qb1, kb_end:] = 0.0
    return out
