"""Probe: the exact-block loop of a plan with warp specialization (Gluon, Hopper only).

One program per (query block of 128 rows, query head), as the Triton kernel. Three partitions:
- two consumer warp groups, 64 query rows each, each waiting only on mbarriers (no CTA-wide barrier per key
  block, so one group's softmax can run beside the other's matmuls);
- one producer warp that copies Q once and each K/V tile of the plan's list through TMA into a ring of buffers.

It reads the plan lists of `vlmsparse.kernels.plan_lists` (exact blocks, then the diagonal blocks, token masks
there) and handles plans without pooled blocks and without tail: the all-level-1 plan and binary plans. Q, K, V
contiguous ``[B, H, L, D]``, D = 128, L a multiple of 128.
"""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.experimental.gluon.language.nvidia.hopper import (
    tma,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

LOG2E = 1.4426950408889634


@gluon.jit
def _program(BlockIdx, CatOff, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb):
    qblk = n_qb - 1 - gl.program_id(1)
    bh = gl.program_id(0)
    b = bh // n_q_heads
    h = bh % n_q_heads
    kvh = h // (n_q_heads // n_kv_heads)
    ph = h if n_plan_heads == n_q_heads else kvh
    row = (b * n_plan_heads + ph) * n_qb + qblk
    idx_ptr = BlockIdx + row.to(gl.int64) * n_kb
    off_ptr = CatOff + row * 11
    o_exact = gl.load(off_ptr + 1)
    o_p8 = gl.load(off_ptr + 7)
    o_mask = gl.load(off_ptr + 8)
    return b, h, kvh, qblk, idx_ptr, o_exact, o_p8, o_mask


@gluon.jit
def _producer(args):
    (q_desc, k_desc, v_desc, BlockIdx, CatOff, Out, qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb,
     q_len, k_len, q_smem, k_bufs, v_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, OVERLAP_) = args
    b, h, kvh, qblk, idx_ptr, o_exact, o_p8, o_mask = _program(BlockIdx, CatOff, n_q_heads, n_kv_heads,
                                                              n_plan_heads, n_qb, n_kb)
    NBUF: gl.constexpr = k_bufs.type.shape[0]
    BN: gl.constexpr = k_bufs.type.shape[1]
    HM: gl.constexpr = q_smem.type.shape[1]
    q_row = (b * n_q_heads + h) * q_len + qblk * (2 * HM)
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bar, q_smem.index(0))
    tma.async_copy_global_to_shared(q_desc, [q_row + HM, 0], q_bar, q_smem.index(1))
    kv_row = (b * n_kv_heads + kvh) * k_len
    n_ex = o_exact
    n_all = o_exact + (o_mask - o_p8)
    for i in range(n_all):
        t = gl.where(i < n_ex, i, o_p8 + (i - n_ex))
        j = gl.load(idx_ptr + t)
        s = i % NBUF
        phase = (i // NBUF) & 1
        mbarrier.wait(k_empty.index(s), phase ^ 1)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv_row + j * BN, 0], k_ready.index(s), k_bufs.index(s))
        mbarrier.wait(v_empty.index(s), phase ^ 1)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [kv_row + j * BN, 0], v_ready.index(s), v_bufs.index(s))


@gluon.jit
def _consume(args, WG: gl.constexpr, OVERLAP: gl.constexpr):
    (q_desc, k_desc, v_desc, BlockIdx, CatOff, Out, qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb,
     q_len, k_len, q_smem, k_bufs, v_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, OVERLAP_) = args
    b, h, kvh, qblk, idx_ptr, o_exact, o_p8, o_mask = _program(BlockIdx, CatOff, n_q_heads, n_kv_heads,
                                                              n_plan_heads, n_qb, n_kb)
    NBUF: gl.constexpr = k_bufs.type.shape[0]
    BN: gl.constexpr = k_bufs.type.shape[1]
    D: gl.constexpr = k_bufs.type.shape[2]
    HM: gl.constexpr = q_smem.type.shape[1]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BN, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, D, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    m_i = gl.full([HM], float("-inf"), gl.float32, row_s)
    l_i = gl.full([HM], 0.0, gl.float32, row_s)
    acc = gl.zeros([HM, D], gl.float32, o_layout)
    zero_s = gl.zeros([HM, BN], gl.float32, s_layout)
    mbarrier.wait(q_bar, 0)
    q = q_smem.index(WG)

    n_ex = o_exact
    n_all = o_exact + (o_mask - o_p8)
    if OVERLAP:
        # within a warp group: block i's QK^T is issued before block i-1's PV, and block i's softmax runs while
        # that PV is in flight; the rescale of acc waits for it
        if n_ex > 0:
            mbarrier.wait(k_ready.index(0), 0)
            qk = warpgroup_mma(q, k_bufs.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(0, deps=(qk, ))
            mbarrier.arrive(k_empty.index(0), count=1)
            m_i = gl.max(qk, 1) * qk_scale
            p = gl.exp2(qk * qk_scale - m_i[:, None])
            l_i = gl.sum(p, 1)
            p16 = gl.convert_layout(p.to(gl.bfloat16), p_layout)
            for i in range(1, n_ex):
                s = i % NBUF
                phase = (i // NBUF) & 1
                sp = (i - 1) % NBUF
                php = ((i - 1) // NBUF) & 1
                mbarrier.wait(k_ready.index(s), phase)
                qk = warpgroup_mma(q, k_bufs.index(s).permute((1, 0)), zero_s, use_acc=False, is_async=True)
                mbarrier.wait(v_ready.index(sp), php)
                acc = warpgroup_mma(p16, v_bufs.index(sp), acc, is_async=True)
                qk = warpgroup_mma_wait(1, deps=(qk, ))
                mbarrier.arrive(k_empty.index(s), count=1)
                m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
                p = gl.exp2(qk * qk_scale - m_new[:, None])
                alpha = gl.exp2(m_i - m_new)
                l_i = l_i * alpha + gl.sum(p, 1)
                m_i = m_new
                # the new P goes into the operand registers only once the PV reading the old one is done
                acc = warpgroup_mma_wait(0, deps=(acc, ))
                mbarrier.arrive(v_empty.index(sp), count=1)
                p16 = gl.convert_layout(p.to(gl.bfloat16), p_layout)
                acc = acc * gl.convert_layout(alpha, row_o)[:, None]
            sp = (n_ex - 1) % NBUF
            php = ((n_ex - 1) // NBUF) & 1
            mbarrier.wait(v_ready.index(sp), php)
            acc = warpgroup_mma(p16, v_bufs.index(sp), acc, is_async=True)
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(v_empty.index(sp), count=1)
    else:
        for i in range(n_ex):
            s = i % NBUF
            phase = (i // NBUF) & 1
            mbarrier.wait(k_ready.index(s), phase)
            qk = warpgroup_mma(q, k_bufs.index(s).permute((1, 0)), zero_s, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(0, deps=(qk, ))
            mbarrier.arrive(k_empty.index(s), count=1)
            m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
            p = gl.exp2(qk * qk_scale - m_new[:, None])
            alpha = gl.exp2(m_i - m_new)
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            acc = acc * gl.convert_layout(alpha, row_o)[:, None]
            p16 = gl.convert_layout(p.to(gl.bfloat16), p_layout)
            mbarrier.wait(v_ready.index(s), phase)
            acc = warpgroup_mma(p16, v_bufs.index(s), acc, is_async=True)
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(v_empty.index(s), count=1)

    offs_m = qblk * (2 * HM) + WG * HM + gl.arange(0, HM, layout=row_s)
    limit = offs_m + (k_len - q_len)
    for i in range(n_ex, n_all):
        s = i % NBUF
        phase = (i // NBUF) & 1
        j = gl.load(idx_ptr + o_p8 + (i - n_ex))
        offs_n = j * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
        mbarrier.wait(k_ready.index(s), phase)
        qk = warpgroup_mma(q, k_bufs.index(s).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(0, deps=(qk, ))
        mbarrier.arrive(k_empty.index(s), count=1)
        keep = (offs_n[None, :] <= limit[:, None]) & (offs_n[None, :] < k_len)
        qk = gl.where(keep, qk * qk_scale, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(qk, 1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(qk - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        l_i = l_i * alpha + gl.sum(p, 1)
        m_i = m_new
        acc = acc * gl.convert_layout(alpha, row_o)[:, None]
        p16 = gl.convert_layout(p.to(gl.bfloat16), p_layout)
        mbarrier.wait(v_ready.index(s), phase)
        acc = warpgroup_mma(p16, v_bufs.index(s), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        mbarrier.arrive(v_empty.index(s), count=1)

    l_o = gl.convert_layout(l_i, row_o)
    out = acc / gl.where(l_o > 0.0, l_o, 1.0)[:, None]
    rows = qblk * (2 * HM) + WG * HM + gl.arange(0, HM, layout=row_o)
    cols = gl.arange(0, D, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = Out + ((b * n_q_heads + h) * q_len + rows).to(gl.int64)[:, None] * D + cols[None, :]
    gl.store(o_ptrs, out.to(gl.bfloat16), mask=(rows < q_len)[:, None])


@gluon.jit
def _consume1(args):
    _consume(args, 1, args[22])


@gluon.jit
def _exact_ws_fwd(q_desc, k_desc, v_desc, BlockIdx, CatOff, Out, qk_scale, n_q_heads, n_kv_heads, n_plan_heads,
                  n_qb, n_kb, q_len, k_len, NBUF: gl.constexpr, OVERLAP: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                  PRODUCER_REGS: gl.constexpr):
    HM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [2, HM, D], q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [NBUF, BN, D], k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [NBUF, BN, D], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(NBUF):
        mbarrier.init(k_ready.index(s), count=1)
        mbarrier.init(v_ready.index(s), count=1)
        mbarrier.init(k_empty.index(s), count=2)  # one arrival per consumer warp group
        mbarrier.init(v_empty.index(s), count=2)
    args = (q_desc, k_desc, v_desc, BlockIdx, CatOff, Out, qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb,
            q_len, k_len, q_smem, k_bufs, v_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, OVERLAP)
    gl.warp_specialize([
        (_consume, (args, 0, OVERLAP)),
        (_consume1, (args, )),
        (_producer, (args, )),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def _descs(q, k, v, hm=64, bn=128):
    b, hq, lq, d = q.shape
    q2 = q.reshape(b * hq * lq, d)
    k2 = k.reshape(-1, d)
    v2 = v.reshape(-1, d)
    ql = gl.NVMMASharedLayout.get_default_for([hm, d], gl.bfloat16)
    kl = gl.NVMMASharedLayout.get_default_for([bn, d], gl.bfloat16)
    return (TensorDescriptor.from_tensor(q2, [hm, d], ql), TensorDescriptor.from_tensor(k2, [bn, d], kl),
            TensorDescriptor.from_tensor(v2, [bn, d], kl))


def exact_ws_attention(q, k, v, plan, n_plan_heads, sm_scale=None, nbuf=2, overlap=True, consumer_regs=240, producer_regs=24,
                       maxnreg=168):
    """``q`` ``[B, Hq, L, D]``, ``k``/``v`` ``[B, Hkv, L, D]`` contiguous bfloat16; ``plan`` a CompiledPlan of a plan with
    no pooled block (not checked here)."""
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    assert d == 128 and lq % 128 == 0 and lk % 128 == 0 and q.is_contiguous() and k.is_contiguous()
    scale = (d ** -0.5 if sm_scale is None else sm_scale) * LOG2E
    out = torch.empty_like(q)
    n_qb, n_kb = lq // 128, lk // 128
    qd, kd, vd = _descs(q, k, v)
    _exact_ws_fwd[(b * hq, n_qb)](qd, kd, vd, plan.block_idx, plan.cat_offsets, out, scale, hq, hkv, n_plan_heads, n_qb,
                                   n_kb, lq, lk, NBUF=nbuf, OVERLAP=overlap, CONSUMER_REGS=consumer_regs, PRODUCER_REGS=producer_regs,
                                   num_warps=4, maxnreg=maxnreg)
    return out
