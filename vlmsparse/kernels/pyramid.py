"""Triton pyramid sparse attention: launcher, plan compilation and the kernel.

One program handles one (query block, q-head). It reads a compact list of the key blocks its plan keeps,
grouped by level, and visits only those: exact blocks (level 1) from K/V, pooled blocks (level 2, 4, 8)
from the K/V pyramid with a ``+ log2(group size)`` logit correction (the kernel works in base 2), up to ``p``
consecutive level-``p`` blocks read as one full tile of pooled keys (a span) and the rest one block a tile, then the
blocks that meet the causal diagonal (or end the sequence) with token-level masking. With ``tail=True``
the keys a row skips become one extra key, their mean, with logit ``+ ln(count)``; the sums of the wholly
visible blocks it skips are computed before the launch.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .blocks import INVISIBLE, PARTIAL, block_classes, cdiv
from .kv_pyramid import KVPyramid, build_kv_pyramid
from .pdl import pdl_ok, release_dependents, wait_for_prior
from .plan_lists import CompiledPlan, compile_plan
from .pyramid_ws import pyramid_attention_ws, ws_supported
from .validation import (
    check_attention_args,
    interpreting,
    raise_bad_level_values,
    triton_can_run,
    valid_level_values,
)

LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    """``a @ b`` accumulated in float32. ``UPCAST``: exact float32 products (float32 inputs, which would otherwise
    run as tf32, and bfloat16 under the interpreter, whose bfloat16 matmul is wrong)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _pv(p, v, acc, UPCAST: tl.constexpr):
    """``acc + p @ v`` with ``p`` rounded to the dtype of ``v`` (the accumulation stays in float32)."""
    if UPCAST:
        return acc + tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
    return tl.dot(p.to(v.dtype), v, acc)


@triton.jit
def _online_update(m_i, l_i, acc, qk, v, UPCAST: tl.constexpr):
    """One online-softmax step over logits ``qk`` (base 2, rows all finite) and values ``v``."""
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _pv(p, v, acc * alpha[:, None], UPCAST)
    return m_new, l_i, acc


@triton.jit
def _online_update_scaled(m_i, l_i, acc, qk, qk_scale, v, UPCAST: tl.constexpr):
    """``_online_update`` on raw logits ``qk``: the scale folds into one multiply-add per element."""
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = tl.math.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _pv(p, v, acc * alpha[:, None], UPCAST)
    return m_new, l_i, acc


@triton.jit
def _online_update_masked(m_i, l_i, acc, qk, v, UPCAST: tl.constexpr):
    """Like ``_online_update`` but rows may be all ``-inf`` (nothing visible yet)."""
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(qk - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _pv(p, v, acc * alpha[:, None], UPCAST)
    return m_new, l_i, acc


@triton.jit
def _pooled_rows(kp_base, vp_base, g, g_ok, offs_d, d_mask, head_dim, EVEN_D: tl.constexpr):
    """Rows ``g`` of the pooled K and V of one head (rows where ``g_ok`` is false read zeros)."""
    if EVEN_D:
        ld_mask = g_ok[:, None]
    else:
        ld_mask = g_ok[:, None] & d_mask[None, :]
    kp = tl.load(kp_base + g[:, None] * head_dim + offs_d[None, :], mask=ld_mask, other=0.0)
    vp = tl.load(vp_base + g[:, None] * head_dim + offs_d[None, :], mask=ld_mask, other=0.0)
    return kp, vp


@triton.jit
def _pooled_blocks(
    m_i, l_i, acc, q, qk_scale, idx_ptr, start, stop, kp_base, vp_base, offs_d, d_mask, k_len, head_dim,
    P: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr,
):
    """Visit kept blocks of pooling level ``P``: ``BLOCK_N // P`` pooled keys each, logits ``+ log2(count)``.

    One block per tile (padded to 16 rows for the matmul). Gathering ``P`` blocks into one full tile was
    measured slower on an H100 (notes/kernel.md), and so was one stream of gathered pooled keys of every level
    (tag ``kernel-pooled-stream``: on an H200 with triton 3.6 a gathered 128-key tile cost about 4 exact tiles). As in the exact loop, the next block index is read one
    step ahead (1-2% faster on PSA plans). Pyramid tiles through tensor descriptors gained another 1% in the
    kernel but six more descriptors to encode on the host per call, which made small sparse calls host-bound
    (notes/kernel.md); they stay pointer loads.
    """
    GROUPS: tl.constexpr = BLOCK_N // P  # pooled keys per block
    TILE: tl.constexpr = 16 if GROUPS < 16 else GROUPS
    n_groups = (k_len + P - 1) // P
    offs_g = tl.arange(0, TILE)
    if stop > start:  # an empty loop's set-up (first index load, pipeline prologue) costs time too
        j_next = tl.load(idx_ptr + start)
        for t in range(start, stop):
            j = j_next
            j_next = tl.load(idx_ptr + t + 1, mask=t + 1 < stop, other=0)
            g = j * GROUPS + offs_g
            g_ok = (offs_g < GROUPS) & (g < n_groups)
            kp, vp = _pooled_rows(kp_base, vp_base, g, g_ok, offs_d, d_mask, head_dim, EVEN_D)
            count = tl.minimum(k_len - g * P, P).to(tl.float32)
            # the log correction and the padding rows' mask as one bias per column, added in the scaling FMA
            bias = tl.where(g_ok, tl.log2(tl.maximum(count, 1.0)), float("-inf"))
            qk = _dot(q, tl.trans(kp), UPCAST) * qk_scale + bias[None, :]
            m_i, l_i, acc = _online_update(m_i, l_i, acc, qk, vp, UPCAST)
    return m_i, l_i, acc


@triton.jit
def _pooled_spans(
    m_i, l_i, acc, q, qk_scale, idx_ptr, start, stop, kp_base, vp_base, DescKP, DescVP, b, kvh, row0,
    offs_d, d_mask, head_dim,
    P: tl.constexpr, LOG2P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr, DESC: tl.constexpr,
):
    """Visit spans of level ``P``: up to ``P`` consecutive wholly visible blocks, whose pooled keys lie side by
    side in the pyramid, as one tile of ``BLOCK_N`` pooled keys (logits ``+ log2 P``; entry ``8 * first + n - 1``).

    ``DESC``: the tiles come through tensor descriptors of the concatenated pyramid (rows ``row0 + ...`` of
    ``[B, Hkv, G2 + G4 + G8, D]``; rows past a span's end belong to the next blocks or level, or read zeros, and
    are masked out of the softmax). With pointer loads a 128-row tile needs a 64-bit address per element: the
    compiler spilled 360 bytes per thread (local compile for sm_90, triton 3.6).
    """
    GROUPS: tl.constexpr = BLOCK_N // P  # pooled keys per block
    offs_g = tl.arange(0, BLOCK_N)
    if stop > start:  # an empty loop's set-up costs time too
        e_next = tl.load(idx_ptr + start)
        for t in range(start, stop):
            e = e_next
            e_next = tl.load(idx_ptr + t + 1, mask=t + 1 < stop, other=0)
            g_ok = offs_g < (e % 8 + 1) * GROUPS
            if DESC:
                kp = DescKP.load([b, kvh, row0 + (e // 8) * GROUPS, 0]).reshape(BLOCK_N, BLOCK_D)
                vp = DescVP.load([b, kvh, row0 + (e // 8) * GROUPS, 0]).reshape(BLOCK_N, BLOCK_D)
            else:
                kp, vp = _pooled_rows(kp_base, vp_base, (e // 8) * GROUPS + offs_g, g_ok, offs_d, d_mask, head_dim,
                                      EVEN_D)
            # ``+ log2 P`` and the mask of the rows past the span's end as one bias per column, added in the
            # scaling FMA: a select per logit made a span's softmax step about a third longer than an exact one's
            bias = tl.where(g_ok, LOG2P, float("-inf"))
            qk = _dot(q, tl.trans(kp), UPCAST) * qk_scale + bias[None, :]
            m_i, l_i, acc = _online_update(m_i, l_i, acc, qk, vp, UPCAST)
    return m_i, l_i, acc


@triton.jit
def _block_columns(j, offs_n, d_mask, k_len, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr):
    """Key block ``j``'s key indices, which of them exist (``< k_len``), and the load mask of its ``[BLOCK_N, D]``
    tile (the head dim masked unless ``EVEN_D``)."""
    cols = j * BLOCK_N + offs_n
    n_ok = cols < k_len
    if EVEN_D:
        ld_mask = n_ok[:, None]
    else:
        ld_mask = n_ok[:, None] & d_mask[None, :]
    return cols, n_ok, ld_mask


@triton.jit
def _skipped_diagonal_tile(base, stride_n, j, offs_n, offs_d, d_mask, k_len, limit, m_ok,
                           BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr):
    """Key block ``j`` of K or V (from ``base``) and which rows see which of its keys (causal ``limit``, sequence
    end, rows past the queries): what both tail passes over skipped diagonal blocks read."""
    cols, n_ok, ld_mask = _block_columns(j, offs_n, d_mask, k_len, BLOCK_N, EVEN_D)
    tile = tl.load(base + cols[:, None] * stride_n + offs_d[None, :], mask=ld_mask, other=0.0)
    vis = n_ok[None, :] & (cols[None, :] <= limit[:, None]) & m_ok[:, None]
    return tile, vis


@triton.jit
def _two_part_columns(x, col, dtype):
    """``x`` ``[N]`` float32 as ``[N, 16]`` of ``dtype``: column 0 its rounding to ``dtype``, column 1 what the
    rounding left (about 16 bits of ``x`` in two half-precision parts), the rest zeros."""
    hi = x.to(dtype).to(tl.float32)
    return tl.where(col[None, :] == 0, hi[:, None], tl.where(col[None, :] == 1, (x - hi)[:, None], 0.0)).to(dtype)


@triton.jit
def _diagonal_tile(DescK, DescV, k_base, v_base, stride_kn, stride_vn, b, kvh, j, offs_m, offs_n, offs_d, d_mask,
                   limit, k_len, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   EVEN_D: tl.constexpr, KV_DESC: tl.constexpr):
    """Key block ``j`` on the causal diagonal (or at the end of the sequence): its K and V tiles, and which rows
    see which of its keys."""
    cols, n_ok, ld_mask = _block_columns(j, offs_n, d_mask, k_len, BLOCK_N, EVEN_D)
    if KV_DESC:
        k = DescK.load([b, kvh, j * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D)
        v = DescV.load([b, kvh, j * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D)
    else:
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :], mask=ld_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=ld_mask, other=0.0)
    if CAUSAL:
        keep = n_ok[None, :] & (cols[None, :] <= limit[:, None])
    else:
        keep = n_ok[None, :] & (offs_m[:, None] >= 0)
    return k, v, keep


@triton.jit
def _tail_key(
    m_i, l_i, acc, q, sum_k, sum_v, n_full, qk_scale, idx_ptr, o_mask, o_skip_part,
    k_base, v_base, stride_kn, stride_vn, offs_n, offs_d, d_mask, limit, m_ok, k_len,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, UPCAST: tl.constexpr, DIAG: tl.constexpr,
):
    """Tail aggregation for one program: one extra key per row, the mean of the visible keys its plan skips
    (those wholly visible as ``sum_k``, ``sum_v`` and ``n_full``, read from the launcher's sums at the start of
    the program; those on the diagonal listed in ``idx_ptr[o_mask:o_skip_part]``), with logit ``+ log2(count)``."""
    # Both products with the sums are matmuls against 16-column tiles holding a mean in two parts of q's dtype:
    # q and the accumulator never leave their matmul layouts (as elementwise products and row sums they made the
    # compiler spill 0.5 KB per thread), and the sums stay in a compact layout from their loads to here.
    col = tl.arange(0, 16)
    inv_full = 1.0 / tl.maximum(n_full, 1.0)
    qk_mean = _dot(q, _two_part_columns(sum_k * inv_full, col, q.dtype), UPCAST)
    qs = tl.sum(tl.where(col[None, :] < 2, qk_mean, 0.0), 1) * n_full  # q . (sum of the skipped keys)
    n_skip = tl.zeros([BLOCK_M], dtype=tl.float32) + n_full
    # Skipped blocks on the diagonal (category 9, rare: planners keep the diagonal) are summed per row through
    # their visibility masks times their K and V tiles; ``DIAG=False`` (the caller guarantees there are none)
    # leaves that code out (a local compile for sm_90: 44 bytes of spill per thread instead of 524).
    if DIAG:
        # pass 1 over skipped diagonal blocks: logits and counts (no [BLOCK_M, D] accumulator: it made the
        # compiler spill 10 KB per thread)
        for t in tl.range(o_mask, o_skip_part, num_stages=1):  # rare; unpipelined keeps shared memory in bounds
            k, vis = _skipped_diagonal_tile(k_base, stride_kn, tl.load(idx_ptr + t), offs_n, offs_d, d_mask, k_len,
                                            limit, m_ok, BLOCK_N, EVEN_D)
            qs += tl.sum(tl.where(vis, _dot(q, tl.trans(k), UPCAST), 0.0), 1)
            n_skip += tl.sum(vis.to(tl.float32), 1)
    has_tail = n_skip > 0.5
    inv = tl.where(has_tail, 1.0 / tl.maximum(n_skip, 1.0), 0.0)
    s_tail = qs * inv * qk_scale + tl.log2(tl.maximum(n_skip, 1.0))
    s_tail = tl.where(has_tail, s_tail, float("-inf"))
    m_new = tl.maximum(m_i, s_tail)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p_tail = tl.math.exp2(s_tail - m_safe)
    l_i = l_i * alpha + p_tail
    w_tail = p_tail * inv  # weight of each skipped key's value
    # + (weight of the wholly visible skipped keys) x (their mean value), as [BLOCK_M, 16] x [16, BLOCK_D] in two
    # parts each: w v ~ w_hi v_hi + w_lo v_hi + w_hi v_lo (columns of the weight / rows of the mean 0, 1, 2)
    w = w_tail * n_full
    w_hi = w.to(q.dtype).to(tl.float32)
    w_full = tl.where(col[None, :] == 1, (w - w_hi)[:, None], tl.where(col[None, :] <= 2, w_hi[:, None], 0.0))
    mean_v = sum_v * inv_full
    v_hi = mean_v.to(q.dtype).to(tl.float32)
    mean_v = tl.where(col[:, None] <= 1, v_hi[None, :], tl.where(col[:, None] == 2, (mean_v - v_hi)[None, :], 0.0))
    acc = _pv(w_full, mean_v.to(q.dtype), acc * alpha[:, None], UPCAST)
    m_i = m_new
    if DIAG:
        # pass 2: the skipped diagonal keys' values, weighted like a P @ V step
        for t in tl.range(o_mask, o_skip_part, num_stages=1):
            v, vis = _skipped_diagonal_tile(v_base, stride_vn, tl.load(idx_ptr + t), offs_n, offs_d, d_mask, k_len,
                                            limit, m_ok, BLOCK_N, EVEN_D)
            acc = _pv(tl.where(vis, w_tail[:, None], 0.0), v, acc, UPCAST)
    return m_i, l_i, acc


@triton.jit
def _pyramid_attention_fwd(
    Q, K, V, Out,
    KP, VP,
    SkipSums,
    BlockIdx, CatOff,
    DescK, DescV, DescKP, DescVP,
    qk_scale,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, q_len, k_len, head_dim,
    CAUSAL: tl.constexpr, TAIL: tl.constexpr, TAIL_DIAG: tl.constexpr, DIAG_STAGES: tl.constexpr,
    POOLED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr, KV_DESC: tl.constexpr, PYR_DESC: tl.constexpr, HEADS_FIRST: tl.constexpr,
    PDL: tl.constexpr,
):
    # heavy (late) query blocks first: better load balance under causal masking; HEADS_FIRST launches the last
    # query block of every head before the second-to-last of any
    if HEADS_FIRST:
        qblk = n_qb - 1 - tl.program_id(1)
        bh = tl.program_id(0)
    else:
        qblk = n_qb - 1 - tl.program_id(0)
        bh = tl.program_id(1)
    b = bh // n_q_heads
    h = bh % n_q_heads
    kvh = h // (n_q_heads // n_kv_heads)
    ph = h if n_plan_heads == n_q_heads else kvh

    offs_m = qblk * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    m_ok = offs_m < q_len

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    if EVEN_D:
        q = tl.load(q_ptrs, mask=m_ok[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=m_ok[:, None] & d_mask[None, :], other=0.0)

    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    row = (b * n_plan_heads + ph) * n_qb + qblk
    idx_ptr = BlockIdx + row.to(tl.int64) * n_kb
    off_ptr = CatOff + row * 11
    o_exact = tl.load(off_ptr + 1)
    o_s2 = tl.load(off_ptr + 2)
    o_s4 = tl.load(off_ptr + 3)
    o_s8 = tl.load(off_ptr + 4)
    o_p2 = tl.load(off_ptr + 5)
    o_p4 = tl.load(off_ptr + 6)
    o_p8 = tl.load(off_ptr + 7)
    o_mask = tl.load(off_ptr + 8)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # level 1, block wholly visible: no masking at all. The next block index is read one step ahead: read in
    # the same step, the compiler copied it asynchronously into a single buffer and waited for every copy at
    # each step, keeping two K/V buffers instead of three (4-12% slower on an H100, notes/kernel.md).
    # KV_DESC: K/V tiles come through tensor descriptors (TMA on Hopper; 8-14% faster than pointer loads on
    # an H100, notes/kernel.md); a tile past the end of K/V reads zeros.
    j_next = tl.load(idx_ptr)  # unmasked (every row has n_kb entries): issued without waiting for the offsets
    for t in range(0, o_exact):
        j = j_next
        j_next = tl.load(idx_ptr + t + 1, mask=t + 1 < o_exact, other=0)
        cols = j * BLOCK_N + offs_n
        if KV_DESC:
            k = DescK.load([b, kvh, j * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D)
            v = DescV.load([b, kvh, j * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D)
        elif EVEN_D:
            k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :])
            v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :])
        else:
            k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :], mask=d_mask[None, :], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=d_mask[None, :], other=0.0)
        qk = _dot(q, tl.trans(k), UPCAST)
        m_i, l_i, acc = _online_update_scaled(m_i, l_i, acc, qk, qk_scale, v, UPCAST)

    # PDL: this launch is chained (vlmsparse.kernels.pdl) after the pyramid's (1) or the skipped sums' (2: the
    # pyramid was complete before them); every program waits once, before it first reads what they wrote
    wait_for_prior(PDL == 1)

    # pooled levels, one loop per level, from the concatenated pyramid ([B, Hkv, G2 + G4 + G8, D], contiguous);
    # POOLED=False (a plan with no pooled block, which the caller guarantees) compiles them out
    if POOLED:
        pyr_bh = b * n_kv_heads + kvh
        g2 = (k_len + 1) // 2
        g4 = (k_len + 3) // 4
        g8 = (k_len + 7) // 8
        kp_base = KP + pyr_bh.to(tl.int64) * (g2 + g4 + g8) * head_dim  # level 2, then level 4, then level 8
        vp_base = VP + pyr_bh.to(tl.int64) * (g2 + g4 + g8) * head_dim
        # spans: consecutive blocks of one level read as one full tile of pooled keys
        m_i, l_i, acc = _pooled_spans(
            m_i, l_i, acc, q, qk_scale, idx_ptr, o_exact, o_s2, kp_base, vp_base, DescKP, DescVP, b, kvh, 0,
            offs_d, d_mask, head_dim, 2, 1.0, BLOCK_N, BLOCK_D, EVEN_D, UPCAST, PYR_DESC,
        )
        m_i, l_i, acc = _pooled_spans(
            m_i, l_i, acc, q, qk_scale, idx_ptr, o_s2, o_s4, kp_base + g2 * head_dim, vp_base + g2 * head_dim,
            DescKP, DescVP, b, kvh, g2, offs_d, d_mask, head_dim, 4, 2.0, BLOCK_N, BLOCK_D, EVEN_D, UPCAST, PYR_DESC,
        )
        m_i, l_i, acc = _pooled_spans(
            m_i, l_i, acc, q, qk_scale, idx_ptr, o_s4, o_s8, kp_base + (g2 + g4) * head_dim,
            vp_base + (g2 + g4) * head_dim, DescKP, DescVP, b, kvh, g2 + g4, offs_d, d_mask, head_dim, 8, 3.0, BLOCK_N,
            BLOCK_D, EVEN_D, UPCAST, PYR_DESC,
        )
        # single pooled blocks: one narrow tile each
        m_i, l_i, acc = _pooled_blocks(
            m_i, l_i, acc, q, qk_scale, idx_ptr, o_s8, o_p2, kp_base, vp_base,
            offs_d, d_mask, k_len, head_dim, 2, BLOCK_N, EVEN_D, UPCAST,
        )
        m_i, l_i, acc = _pooled_blocks(
            m_i, l_i, acc, q, qk_scale, idx_ptr, o_p2, o_p4, kp_base + g2 * head_dim, vp_base + g2 * head_dim,
            offs_d, d_mask, k_len, head_dim, 4, BLOCK_N, EVEN_D, UPCAST,
        )
        m_i, l_i, acc = _pooled_blocks(
            m_i, l_i, acc, q, qk_scale, idx_ptr, o_p4, o_p8, kp_base + (g2 + g4) * head_dim,
            vp_base + (g2 + g4) * head_dim, offs_d, d_mask, k_len, head_dim, 8, BLOCK_N, EVEN_D, UPCAST,
        )

    if TAIL:
        # The sums are read just before the diagonal blocks (written by the launch just before, they come from
        # L2) and used at the top of the first diagonal step, while its K/V tiles are in flight. Read at the
        # start of the program they stayed in registers through every loop, which slowed the pooled loops of
        # plans with no tail at all (one level 2: +4.8% at 32k). Only a program whose plan skips something
        # visible applies the tail key.
        wait_for_prior(PDL == 2)
        o_skip_part = tl.load(off_ptr + 9)
        has_tail = tl.load(off_ptr + 10) > o_mask
        sums = SkipSums + row.to(tl.int64) * (2 * head_dim + 1)
        sum_k = tl.load(sums + offs_d, mask=d_mask, other=0.0)
        sum_v = tl.load(sums + head_dim + offs_d, mask=d_mask, other=0.0)
        n_full = tl.load(sums + 2 * head_dim)

    # blocks on the causal diagonal or at the end of the sequence: exact, token-level masks
    limit = offs_m + (k_len - q_len)  # last key each row may see
    # With tail and no skipped diagonal blocks (EARLY_TAIL) the tail key goes in at the top of the first diagonal
    # step, before that step waits for its K/V tiles: its dependent chain (two 16-column matmuls, exponentials) runs
    # while the tiles' copies are in flight instead of alone at the end of the program. DIAG_STAGES is then two:
    # the tail's operand tiles beside three stages of K/V buffers are past an H200's shared memory (one diagonal
    # block per program is the usual case).
    EARLY_TAIL: tl.constexpr = TAIL and not TAIL_DIAG
    for t in tl.range(o_p8, o_mask, num_stages=DIAG_STAGES):
        j = tl.load(idx_ptr + t)
        k, v, keep = _diagonal_tile(DescK, DescV, k_base, v_base, stride_kn, stride_vn, b, kvh, j, offs_m, offs_n,
                                    offs_d, d_mask, limit, k_len, CAUSAL, BLOCK_N, BLOCK_D, EVEN_D, KV_DESC)
        if EARLY_TAIL:
            if has_tail & (t == o_p8):
                m_i, l_i, acc = _tail_key(
                    m_i, l_i, acc, q, sum_k, sum_v, n_full, qk_scale, idx_ptr, o_mask, o_skip_part,
                    k_base, v_base, stride_kn, stride_vn, offs_n, offs_d, d_mask, limit, m_ok, k_len,
                    BLOCK_M, BLOCK_N, EVEN_D, UPCAST, False,
                )
        qk = tl.where(keep, _dot(q, tl.trans(k), UPCAST) * qk_scale, float("-inf"))
        m_i, l_i, acc = _online_update_masked(m_i, l_i, acc, qk, v, UPCAST)
    if TAIL:
        # after the loop: with skipped diagonal blocks (after them: it sums their keys per row), or where a
        # program has no diagonal block (not causal, keys ending on a block boundary)
        if has_tail & ((not EARLY_TAIL) | (o_mask == o_p8)):
            m_i, l_i, acc = _tail_key(
                m_i, l_i, acc, q, sum_k, sum_v, n_full, qk_scale, idx_ptr, o_mask, o_skip_part,
                k_base, v_base, stride_kn, stride_vn, offs_n, offs_d, d_mask, limit, m_ok, k_len,
                BLOCK_M, BLOCK_N, EVEN_D, UPCAST, TAIL_DIAG,
            )

    # a row with nothing to attend has l == 0 and acc == 0: it returns zeros, never NaN
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    if EVEN_D:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_ok[:, None])
    else:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_ok[:, None] & d_mask[None, :])


try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # older Triton: pointer loads only
    TensorDescriptor = None


def compile_for(arch: int, *, tma: bool, tail: bool, pooled: bool, pdl: int = 0, num_warps: int = 8,
                num_stages: int = 3):
    """Compile the kernel for CUDA architecture ``arch`` (80: Ampere, 90: Hopper) on any machine, GPU or not
    (Triton's own ``ptxas``), bfloat16, head dim 128, 128 x 128 blocks, causal, with a launch's flags and pointer
    alignment: the check that this Triton still takes the kernel where no GPU can run it. ``tma``: K/V (and the
    pyramid, where ``pooled``) through tensor descriptors, as on Hopper. Returns Triton's compiled kernel."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _pyramid_attention_fwd
    flags = dict(CAUSAL=True, TAIL=tail, TAIL_DIAG=False, DIAG_STAGES=2 if tail else num_stages, POOLED=pooled,
                 BLOCK_M=128, BLOCK_N=128, BLOCK_D=128, EVEN_D=True, UPCAST=False, KV_DESC=tma,
                 PYR_DESC=tma and pooled, HEADS_FIRST=False, PDL=pdl)
    desc, ptr = "tensordesc<bf16[1, 1, 128, 128]>", "*bf16"
    types = dict(Q=ptr, K=ptr, V=ptr, Out=ptr, KP=ptr, VP=ptr, SkipSums="*fp32", BlockIdx="*i32", CatOff="*i32",
                 qk_scale="fp32", DescK=desc if tma else ptr, DescV=desc if tma else ptr,
                 DescKP=desc if tma and pooled else ptr, DescVP=desc if tma and pooled else ptr)
    signature = {n: "constexpr" if n in flags else types.get(n, "i32") for n in fn.arg_names}
    constexprs = {(fn.arg_names.index(n),): v for n, v in flags.items()}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if signature[n].startswith("*")}
    source = ASTSource(fn, signature, constexprs, attrs)
    target = GPUTarget("cuda", arch, 128 if arch >= 90 else 64)
    return triton.compile(source, target=target, options=dict(num_warps=num_warps, num_stages=num_stages))


def can_use_tma(k: torch.Tensor, v: torch.Tensor, check_device: bool = True) -> bool:
    """Whether the kernel can read ``k`` and ``v`` through tensor descriptors (TMA).

    Needs Triton's host-side tensor descriptors, a power-of-two head dim of at least 16, last stride 1 (the
    launcher makes it so), the other strides positive and 16-byte aligned, the data pointers too, and (``check_device``) a
    Hopper or newer GPU, or the interpreter; older GPUs keep pointer loads.
    """
    if TensorDescriptor is None:
        return False
    if check_device and not interpreting():
        if k.device.type != "cuda" or torch.cuda.get_device_capability(k.device)[0] < 9:
            return False
    for t in (k, v):
        d = t.shape[-1]
        size = t.element_size()
        if d < 16 or d & (d - 1) or t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any(s <= 0 or (s * size) % 16 for s in t.stride()[:-1]):  # broadcast (stride-0) K/V: pointers
            return False
    return True


def _kv_descriptor(t: torch.Tensor, block_n: int):
    """A ``[B, Hkv, Lk, D]`` descriptor whose tiles are ``block_n`` rows of one head."""
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, block_n, t.shape[-1]])


@functools.lru_cache(maxsize=64)
def _classes(q_len: int, k_len: int, block_m: int, block_n: int, causal: bool, device: torch.device) -> torch.Tensor:
    """:func:`block_classes` of a call's geometry, kept for the next call of that geometry."""
    return block_classes(q_len, k_len, block_m, block_n, causal, device)


@triton.jit
def _skip_mask(Levels, row, r_ok, first_row, kb, kb_ok, n_kb, q_len, k_len, CAUSAL: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """float32 ``[R, C]``: 1 where plan ``row`` (first query ``first_row``) skips key block ``kb`` and sees all of
    its keys (a skipped block on the diagonal is the kernel's to sum), else 0."""
    lv = tl.load(Levels + row[:, None] * n_kb + kb[None, :], mask=r_ok[:, None] & kb_ok[None, :], other=1)
    if CAUSAL:  # every key of the block at or before the query block's first causal limit
        key_end = tl.minimum((kb + 1) * BLOCK_N, k_len)
        full = key_end[None, :] <= (first_row + (k_len - q_len) + 1)[:, None]
    else:
        full = kb_ok[None, :] & r_ok[:, None]
    return ((lv == 0) & full).to(tl.float32)


@triton.jit
def _skipped_sums_kernel(Levels, Sums, Out, MeanK, MeanV, Count, n_qb, n_kb, rows_per_kv_head, q_len, k_len, width,
                         head_dim, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         R: tl.constexpr, C: tl.constexpr, W: tl.constexpr, MEANS: tl.constexpr,
                         CHAINED: tl.constexpr, RELEASE: tl.constexpr, PRECISION: tl.constexpr = "ieee"):
    """Rows ``R`` x columns ``W`` of :func:`skipped_key_sums` for one (batch, kv-head): the 0/1 mask of wholly
    visible skipped blocks (from ``levels`` and the block geometry) times the block sums, ``C`` blocks a step.
    ``MEANS``: the tail key itself instead, the key and value means (``MeanK``, ``MeanV``, ``[rows, head_dim]``
    in their dtype; zeros where nothing is skipped) and the count (``Count``, float32); else the sums into ``Out``.
    ``CHAINED``: launched right after the pyramid's launch, which it waits for; ``RELEASE``: the attention launch
    after this one may start at once (:mod:`vlmsparse.kernels.pdl`). ``PRECISION``: the products' (``"ieee"``
    float32, or ``"tf32x3"`` three tf32 products on tensor cores)."""
    release_dependents(RELEASE)
    wait_for_prior(CHAINED)
    bkv = tl.program_id(2)
    rows = tl.program_id(0) * R + tl.arange(0, R)  # plan rows of this kv-head: (query head in group, query block)
    r_ok = rows < rows_per_kv_head
    first_row = (rows % n_qb) * BLOCK_M
    cols = tl.program_id(1) * W + tl.arange(0, W)
    c_ok = cols < width
    row = bkv.to(tl.int64) * rows_per_kv_head + rows  # the kernel's plan row
    sums = Sums + bkv.to(tl.int64) * n_kb * width
    acc = tl.zeros([R, W], dtype=tl.float32)
    count = tl.zeros([R], dtype=tl.float32)
    for c0 in range(0, n_kb, C):
        kb = c0 + tl.arange(0, C)
        kb_ok = kb < n_kb
        m = _skip_mask(Levels, row, r_ok, first_row, kb, kb_ok, n_kb, q_len, k_len, CAUSAL, BLOCK_N)
        x = tl.load(sums + kb[:, None] * width + cols[None, :], mask=kb_ok[:, None] & c_ok[None, :], other=0.0)
        acc += tl.dot(m, x.to(tl.float32), input_precision=PRECISION)
        if MEANS:  # the keys counted, for the means (the last column of the block sums)
            n_kb_keys = tl.load(sums + kb * width + (width - 1), mask=kb_ok, other=0.0)
            count += tl.sum(m * n_kb_keys[None, :], 1)
    if MEANS:
        mean = acc / tl.maximum(count, 1.0)[:, None]
        ok = r_ok[:, None] & c_ok[None, :]
        is_k = cols < head_dim
        is_v = (cols >= head_dim) & (cols < 2 * head_dim)
        tl.store(MeanK + row[:, None] * head_dim + cols[None, :], mean.to(MeanK.dtype.element_ty),
                 mask=ok & is_k[None, :])
        tl.store(MeanV + row[:, None] * head_dim + (cols - head_dim)[None, :], mean.to(MeanV.dtype.element_ty),
                 mask=ok & is_v[None, :])
        if tl.program_id(1) == 0:
            tl.store(Count + row, count, mask=r_ok)
    else:
        tl.store(Out + row[:, None] * width + cols[None, :], acc, mask=r_ok[:, None] & c_ok[None, :])


#: The skipped sums' launch form: (rows, key blocks a step, columns, warps, precision) of a program, or None for
#: the default (:func:`sums_form`; notes/ab/sums_forms.py times forms against each other).
SUMS_FORM: tuple[int, int, int, int, str] | None = None


def sums_form(rows_per_kv_head: int, n_kb: int) -> tuple[int, int, int, int, str]:
    """The skipped sums' launch form for plans with ``rows_per_kv_head`` rows per kv-head (plan heads per kv-head
    times query blocks) and ``n_kb`` key blocks: programs of 32 rows where each walks at least 128 key blocks and
    a kv-head has at most 256 rows (one plan head per kv-head at 16k-32k tokens in 128-row blocks), else of 64.
    Every form sums in float32 and gives the same bits. H100, 2026-12-06 (results/tail_ab.csv and
    results/sums_forms.csv): at 32k tokens with 4 kv-heads, 32-row programs took the tailed calls to 0.94-0.945x
    (sink and diagonal) and 0.964-0.993x (random and one-level plans) of their time with 64-row programs, the launch
    alone 17.0 us against 19.8; at 16k sink and diagonal to 0.956x but random keep 0.1 to 1.021x; at 8k they made
    the sink-and-diagonal call 1.047x slower, and with 1,792 rows a kv-head at 32k the launch took 66 us against
    47."""
    return (32 if n_kb >= 128 and rows_per_kv_head <= 256 else 64), 32, 64, 4, "ieee"


def skipped_key_sums(
    levels: torch.Tensor, pyramid: KVPyramid, q_len: int, k_len: int, block_m: int, block_n: int, causal: bool,
    *, chained: bool = False, means: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What tail aggregation needs of the wholly visible key blocks a plan skips: per plan row (batch, plan head,
    query block: the kernel's row order) the sum of their keys, the sum of their values and their key count,
    ``[rows, 2 D + 1]`` float32. One launch: the skip mask times the pyramid's block sums per kv-head, float32
    products (a non-finite key or value then reaches every tail row of its kv-head). The block sums are float32:
    read as float64 they made this launch 1.7-2.8x slower (H200, notes/ab/sums_probe.py). ``chained``: the launch
    right before this one on the stream built ``pyramid`` (:mod:`vlmsparse.kernels.pdl`; ignored where
    :func:`~vlmsparse.kernels.pdl.pdl_ok` says no). ``means``: the tail key itself in that dtype instead, ``(mean
    key, mean value, count)``: ``[rows, D]`` twice (zeros where a row skips nothing) and float32 ``[rows]``."""
    b, hm, n_qb, n_kb = levels.shape
    hkv, width = pyramid.block_sums.shape[1], pyramid.block_sums.shape[3]
    d = (width - 1) // 2
    rows_per_kv_head = (hm // hkv) * n_qb
    rows = b * hm * n_qb
    if means is None:
        out = torch.empty(rows, width, device=levels.device, dtype=torch.float32)
        mean_k = mean_v = count = out
    else:
        mean_k = torch.empty(rows, d, device=levels.device, dtype=means)
        mean_v = torch.empty_like(mean_k)
        out = count = torch.empty(rows, device=levels.device, dtype=torch.float32)
    r, c, w, warps, precision = SUMS_FORM or sums_form(rows_per_kv_head, n_kb)
    pdl = pdl_ok(levels.device)
    chained = chained and pdl
    # the means need no program of the count column alone: every program counts its rows' keys
    _skipped_sums_kernel[(cdiv(rows_per_kv_head, r), cdiv(width if means is None else 2 * d, w), b * hkv)](
        levels.contiguous(), pyramid.block_sums, out, mean_k, mean_v, count, n_qb, n_kb, rows_per_kv_head, q_len,
        k_len, width, d, CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, R=r, C=c, W=w, MEANS=means is not None,
        CHAINED=chained, RELEASE=pdl, PRECISION=precision, num_warps=warps,
        **({"launch_pdl": True} if chained else {}),
    )
    return out if means is None else (mean_k, mean_v, count)


def chain_wait(tail: bool, built_here: bool, pooled: bool) -> int:
    """Where the attention kernel waits when chained (:mod:`vlmsparse.kernels.pdl`): 0 not chained (the launch
    before it is not this call's), 1 before its pooled loops (the pyramid, built by this call, may still be in the
    making: the kernel follows its launch, or the sums' launch that follows it), 2 before the tail's sums (the
    sums' launch comes right before; the pyramid was complete before that launch began, or is not read)."""
    if built_here and pooled:
        return 1
    return 2 if tail else 0


#: Launch order: every head's last query block first, then every head's second-to-last, ... ("heads first"), or
#: one head's query blocks in a row, last first. None chooses by length: heads first up to
#: HEADS_FIRST_MAX_QUERY_BLOCKS query blocks. H200, 2026-12-02 (notes/ab/defaults_ab.py): at 8k tokens heads first
#: took the all-level-1 plan from 0.881 to 0.911 of cuDNN and PSA's default plan from 0.673 to 0.596 ms; at 32k
#: it was slower (0.922 vs 0.933 of cuDNN, 7.18 vs 7.09 ms). Lengths in between were not measured.
GRID_HEADS_FIRST: bool | None = None
HEADS_FIRST_MAX_QUERY_BLOCKS = 96


def pyramid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    levels: torch.Tensor,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    block_m: int = 128,
    block_n: int = 128,
    tail: bool = False,
    pyramid: KVPyramid | None = None,
    plan: CompiledPlan | None = None,
    check_levels: bool = True,
    num_warps: int | None = None,
    num_stages: int | None = None,
    tma: bool | None = None,
    diagonal_kept: bool = False,
    pooled: bool | None = None,
    kernel: str | None = None,
) -> torch.Tensor:
    """Causal, grouped-query pyramid sparse attention.

    Args:
        q: ``[B, Hq, Lq, D]``; k, v: ``[B, Hkv, Lk, D]`` with ``Hq % Hkv == 0`` (K/V are never repeated).
        levels: integer ``[B, Hm, ceil(Lq / block_m), ceil(Lk / block_n)]``, ``Hm`` in {Hq, Hkv}, values in
            {0, 1, 2, 4, 8}: skip, exact, or keys mean-pooled in groups of 2, 4, 8 with a ``+ ln p`` logit.
        causal: query ``i`` sees key ``j`` iff ``j <= i + Lk - Lq``.
        sm_scale: logit scale, ``1 / sqrt(D)`` by default.
        tail: add one key per row, the mean of the keys it skips, with logit ``+ ln(count)``.
        pyramid: a prebuilt :class:`KVPyramid` of these K/V (built here otherwise).
        plan: a prebuilt :class:`CompiledPlan` of ``levels`` (compiled here otherwise).
        check_levels: verify level values (one device sync); planners' output may skip it. With ``tail``, the
            same sync finds out whether ``levels`` skips any visible block; where none is skipped the call runs
            without tail aggregation, which would add nothing.
        tma: read K/V tiles through tensor descriptors; ``None`` does so where :func:`can_use_tma` allows
            (Hopper or newer, or the interpreter) and uses pointer loads elsewhere.
        diagonal_kept: the caller guarantees that ``levels`` skips no block meeting the causal diagonal (every
            planner of this package keeps them): tail aggregation then runs without its per-row passes over
            such blocks, which cost registers in every program that has a tail. Without it, ``check_levels``
            finds out from ``levels`` (in the same device sync as its value check); with neither, those passes
            stay in.
        pooled: whether ``levels`` may hold pooled blocks (2, 4, 8). ``False`` (the caller guarantees a binary
            plan: XAttention's, SpargeAttn's, every block exact) runs a kernel compiled without the pooled
            loops and builds no pooled K/V (with ``tail``, only the block sums); a pooled block in such a plan
            would be read as skipped. ``None``: found out from ``levels`` where ``check_levels`` syncs anyway,
            else ``True``.
        kernel: ``"ws"`` the warp-specialized Hopper kernel (:mod:`vlmsparse.kernels.pyramid_ws`: an sm_90 GPU,
            bfloat16 or float16, head dim 128, 128 x 128 blocks, a tail only where no diagonal block is skipped),
            ``"triton"`` the Triton kernel,
            ``None`` the first where it applies (and where ``num_warps``, ``num_stages`` and ``tma`` are left to
            choose); the environment variable ``VLMSPARSE_KERNEL=triton`` turns the first off.

    Returns:
        ``[B, Hq, Lq, D]`` in the dtype of ``q``.
    """
    check_attention_args(q, k, v, levels, block_m, block_n, check_values=False, sm_scale=sm_scale)
    if kernel not in (None, "ws", "triton"):
        raise ValueError(f"kernel={kernel!r}: pass 'ws', 'triton' or None (the first that applies)")
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    tail_diag = False
    if check_levels:
        # the level values, and what the launch needs to know of them, in one device sync
        ok = valid_level_values(levels)
        asks = {"ok": ok.all()}
        if pooled is None:
            asks["pooled"] = (levels > 1).any()
        if tail:
            classes = _classes(lq, lk, block_m, block_n, causal, levels.device)
            asks["skips"] = ((levels == 0) & (classes != INVISIBLE)).any()
            if not diagonal_kept:
                asks["skips_diag"] = ((levels == 0) & (classes == PARTIAL)).any()
        facts = dict(zip(asks, torch.stack(list(asks.values())).tolist()))
        if not facts["ok"]:
            raise_bad_level_values(levels, ok)
        if pooled is None:
            pooled = bool(facts["pooled"])
        if tail and not facts["skips"]:
            tail = False  # no row skips a key: the tail would add nothing (the same output without its launch)
        if tail and not diagonal_kept:
            tail_diag = bool(facts["skips_diag"])
    elif tail and not diagonal_kept:
        tail_diag = True
    if kernel == "ws" and not ws_supported(q, k, v, block_m, block_n, tail and tail_diag):
        raise ValueError(
            "kernel='ws' runs on an sm_90 (Hopper) GPU outside the interpreter, with bfloat16 or float16 inputs, head "
            "dim 128, block_m = block_n = 128 and 16-byte aligned strides, and with tail=True only where no block "
            "meeting the diagonal is skipped (diagonal_kept=True); pass kernel=None to choose"
        )
    if not triton_can_run(q.device):
        raise ValueError(
            f"pyramid_attention runs its Triton kernel on a CUDA device, but q is on {q.device}; move the tensors "
            "to CUDA, set TRITON_INTERPRET=1 before importing vlmsparse (slow, for tests), or call "
            "vlmsparse.kernels.blockwise.pyramid_attention_blockwise (the same maths in plain PyTorch)"
        )
    if pooled is None:
        pooled = True
    # copies and plan lists before the pyramid's launch: from there on the launches may be chained
    # (vlmsparse.kernels.pdl), and the attention kernel reads q, k, v and the plan lists before it waits
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    if plan is None:
        plan = compile_plan(levels, lq, lk, block_m, block_n, causal)
    elif tuple(plan.block_idx.shape) != (levels.shape[0] * levels.shape[1] * levels.shape[2], levels.shape[3]) or (
        plan.plan_heads != levels.shape[1]
    ):
        raise ValueError("plan was compiled from other levels; pass the CompiledPlan of these levels (or none)")
    built_here = pyramid is None and (pooled or tail)
    if pyramid is None:
        pyramid = build_kv_pyramid(k, v, tail=tail, block_n=block_n, pooled=pooled) if (pooled or tail) else None
    elif pyramid.k_len != lk or (tail and not pyramid.has_block_sums(block_n)) or (pooled and not pyramid.has_pooled):
        raise ValueError(
            "pyramid was built for other K/V (or without tail=True and this block_n, or without its pooled levels); "
            f"rebuild it with build_kv_pyramid(k, v, tail={tail}, block_n={block_n})"
        )
    out = torch.empty_like(q)
    # the chain of this call's launches (vlmsparse.kernels.pdl) and the tail's sums, for either kernel
    pdl = chain_wait(tail, built_here, pooled) if pdl_ok(q.device) else 0
    if kernel == "ws" or (
        kernel is None and num_warps is None and num_stages is None and tma is not False
        and ws_supported(q, k, v, block_m, block_n, tail and tail_diag)
    ):
        # the warp-specialized kernel reads the tail key as one more ring step: its mean key and value in q's dtype
        tail_key = skipped_key_sums(levels, pyramid, lq, lk, block_m, block_n, causal, chained=built_here,
                                    means=q.dtype) if tail else None
        return pyramid_attention_ws(q, k, v, plan, pyramid.pooled_k_all if pooled else None,
                                    pyramid.pooled_v_all if pooled else None, out, scale * LOG2E, causal, tail_key,
                                    pdl)
    sums = skipped_key_sums(levels, pyramid, lq, lk, block_m, block_n, causal, chained=built_here) if tail else None
    n_qb, n_kb = cdiv(lq, block_m), cdiv(lk, block_n)
    block_d = max(16, triton.next_power_of_2(d))
    dummy = k  # a pointer argument for what this launch does not read
    if num_warps is None:
        num_warps = 8 if block_m >= 128 else 4
    if num_stages is None:
        num_stages = 3 if block_d <= 128 else 2
    if tma is None:
        tma = can_use_tma(k, v)
    elif tma and not can_use_tma(k, v, check_device=False):
        raise ValueError(
            "tma=True needs K/V whose head dim is a power of two (>= 16), last stride 1, other strides and data "
            "pointers 16-byte aligned, and triton.tools.tensor_descriptor; pass tma=None to choose automatically"
        )
    desc_k = _kv_descriptor(k, block_n) if tma else k
    desc_v = _kv_descriptor(v, block_n) if tma else v
    kp_all = pyramid.pooled_k_all if pooled else dummy
    vp_all = pyramid.pooled_v_all if pooled else dummy
    # spans of pooled keys through descriptors too, where K/V are (the pyramid is contiguous, same head dim)
    pyr_desc = bool(tma) and pooled and can_use_tma(kp_all, vp_all, check_device=False)
    desc_kp = _kv_descriptor(kp_all, block_n) if pyr_desc else kp_all
    desc_vp = _kv_descriptor(vp_all, block_n) if pyr_desc else vp_all
    heads_first = GRID_HEADS_FIRST if GRID_HEADS_FIRST is not None else n_qb <= HEADS_FIRST_MAX_QUERY_BLOCKS
    grid = (b * hq, n_qb) if heads_first else (n_qb, b * hq)
    _pyramid_attention_fwd[grid](
        q, k, v, out,
        kp_all, vp_all,
        sums if tail else dummy,
        plan.block_idx, plan.cat_offsets,
        desc_k, desc_v, desc_kp, desc_vp,
        scale * LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        hq, hkv, plan.plan_heads, n_qb, n_kb, lq, lk, d,
        CAUSAL=causal, TAIL=tail, TAIL_DIAG=tail_diag, POOLED=pooled,
        DIAG_STAGES=2 if tail and not tail_diag else num_stages,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, EVEN_D=(block_d == d),
        UPCAST=(q.dtype == torch.float32 or (q.dtype == torch.bfloat16 and interpreting())),
        KV_DESC=bool(tma), PYR_DESC=pyr_desc, HEADS_FIRST=heads_first, PDL=pdl,
        num_warps=num_warps, num_stages=num_stages, **({"launch_pdl": True} if pdl else {}),
    )
    return out
