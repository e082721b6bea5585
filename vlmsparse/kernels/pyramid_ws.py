"""Pyramid sparse attention on Hopper with warp specialization (Gluon): the same plans, the same maths.

The Triton kernel (:mod:`vlmsparse.kernels.pyramid`) compiles on an sm_90 GPU to one program of two warp groups
that meet at a block-wide barrier several times per key block, each waiting at once for every tensor-core matmul
it issues, so a program's softmax never runs beside its matmuls. This kernel, for the plans and shapes where it
applies (:func:`ws_supported`), splits the work of each query tile (a query block of 128 rows and one query head)
into

- a producer warp that copies the query tile once and every K/V tile of the plan, in the plan's order, through
  TMA into a ring of shared-memory buffers, each guarded by an mbarrier;
- two consumer warp groups of 64 query rows each, which wait on those mbarriers only (never on each other), and
  within each of which block ``i``'s ``Q K^T`` is issued before block ``i - 1``'s ``P V``, so block ``i``'s
  softmax runs while that ``P V`` is in flight. Each reads its half of Q into registers at the tile's start (the
  matmuls' left operand from registers) and releases the buffer at once, and writes its output through shared
  memory with one TMA copy.

Steps, in the order of the plan lists (:mod:`vlmsparse.kernels.plan_lists`): exact blocks, spans of pooled blocks
(one 128-key tile of the pyramid, logits ``+ log2 p``, the rows past the span masked), single pooled blocks (their
``128 / p`` pooled rows alone, copied through a TMA box of that many rows into the ring slot's first rows, a narrow
matmul, logits ``+ log2(count)``), then the blocks that need token masks. Every step is the Triton kernel's step on
the same operands: the outputs agree to rounding. Tail aggregation (one more key per row, the mean of the keys the
row skips) is the last step, a narrow one on a ring tile whose first row is the plan row's mean key (the launcher's
skipped-key means), and it normalises the output as it adds the key; a tail over skipped blocks on the diagonal,
which no planner here makes, is left to the Triton kernel.

Persistent schedule: one program per SM, each walking query tiles (a query block of one head) drawn from a
counter, heavy (late) query blocks first. The producer draws the next tile once it has issued the current tile's
last copy and loads that tile's Q as soon as both consumers have read the current one's into registers, so the next
tile's Q and first copies load while the current tile runs. The counter (two int32 per CUDA stream) is zero between
launches: a launch's last program sets it back, so calls back to back, on several streams or replayed from a CUDA
graph each start from tile 0.

Chained launches (:mod:`vlmsparse.kernels.pdl`): with ``PDL=1`` the producer waits for the launch before (the
pyramid's, or the sums' after it) just before its first pyramid tile, with ``PDL=2`` (a prebuilt pyramid) just
before a tile's tail key; consumers wait only in their tail step, before reading the count.

Not runnable under the Triton interpreter: the tests check it against the Triton kernel and the float64
reference on a Hopper GPU (``VLMSPARSE_TEST_DEVICE=cuda``).
"""
from __future__ import annotations

import dataclasses
import functools
import os

import torch

from .blocks import cdiv

try:  # Gluon: Triton >= 3.5; its Hopper pieces are only usable on an sm_90 device
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                                      warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor

    # a barrier of the warp group (Gluon's name for it changed: thread_barrier up to Triton 3.6, barrier later)
    _block_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
    # a TMA copy from global to shared memory (async_copy_global_to_shared up to Triton 3.6, async_load later)
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    # a TMA copy from shared to global memory (async_copy_shared_to_global up to Triton 3.6, async_store later)
    _tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
    # 128-byte swizzled tiles of 16-bit elements (bfloat16 and float16 alike), as the TMA boxes are written
    _SMEM_Q = gl.constexpr(gl.NVMMASharedLayout.get_default_for([64, 128], gl.bfloat16))
    _SMEM_KV = gl.constexpr(gl.NVMMASharedLayout.get_default_for([128, 128], gl.bfloat16))
    # the span bias through the tensor cores: [128, 16] tables (B, read transposed; the [64, 16] selector, A, is
    # built in registers, _SEL), 32-byte swizzled
    _SMEM_BIAS = gl.constexpr(gl.NVMMASharedLayout.get_default_for([128, 16], gl.bfloat16))
    _FILL = gl.constexpr(gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[16, 2], warps_per_cta=[4, 1],
                                          order=[1, 0]))
    # a consumer's [64, 128] wgmma results (logits, accumulator) and P as the left operand of P V
    _ACC = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 16]))
    _P = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=_ACC, k_width=2))
    # the span bias's selector as the left operand from registers ([64, 16]: ones in the two columns of its span)
    _SEL = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=_ACC, k_width=2))
    # one value per thread of a consumer warp group
    _VEC = gl.constexpr(gl.BlockedLayout(size_per_thread=[1], threads_per_warp=[32], warps_per_cta=[4], order=[0]))
    # the same for the producer's one warp
    _ONE_WARP = gl.constexpr(gl.BlockedLayout(size_per_thread=[1], threads_per_warp=[32], warps_per_cta=[1],
                                              order=[0]))
except Exception:  # pragma: no cover - a Triton without Gluon, or with another Gluon API
    gluon = None

#: Query rows per program (two consumer warp groups of 64), keys per block, head dim: the only shapes here.
BLOCK = 128
HALF = 64
HEAD_DIM = 128
#: Rows of the mean keys and values copied for a tail step (its narrow step's width; the first is the row's).
TAIL_ROWS = 16
#: K/V ring depth: two stages measured as fast as three (notes/kernel.md) in 64 KB less shared memory.
STAGES = 2
#: Registers per thread: consumer warp groups, producer warp, at launch (the three partitions' sum fits 64K).
REGS = (240, 24, 168)
#: ``VLMSPARSE_KERNEL=triton`` turns this kernel off everywhere.
ENV = "VLMSPARSE_KERNEL"


def ws_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_m: int, block_n: int,
                 tail_diag: bool) -> bool:
    """Whether :func:`pyramid_attention_ws` runs these arguments: an sm_90 GPU with Gluon, not the interpreter,
    bfloat16 or float16, head dim 128, 128 x 128 blocks, 16-byte aligned strides with a contiguous head dim (TMA),
    and no tail aggregation over skipped blocks that meet the diagonal (``tail_diag``; no planner here skips
    one)."""
    if gluon is None or os.environ.get(ENV, "").lower() == "triton":
        return False
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    if not q.is_cuda or not _is_sm90(_index(q.device)):
        return False
    if tail_diag or block_m != BLOCK or block_n != BLOCK or q.shape[-1] != HEAD_DIM:
        return False
    if q.dtype not in (torch.bfloat16, torch.float16):
        return False
    for t in (q, k, v):
        if t.stride(-1) != 1 or any((s * t.element_size()) % 16 for s in t.stride()[:-1]) or t.data_ptr() % 16:
            return False
    return True


if gluon is not None:

    @gluon.jit
    def _next_tile(Sched):
        """The next query tile to take (a counter every program draws from; heavy tiles come first)."""
        return gl.atomic_add(Sched, 1, sem="relaxed")

    @gluon.jit
    def _program_lists(tile, BlockIdx, CatOff, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, n_tiles):
        n_bh = n_tiles // n_qb
        qblk = n_qb - 1 - tile // n_bh  # heavy (late) query blocks first, every head's before the next
        bh = tile % n_bh
        b = bh // n_q_heads
        h = bh % n_q_heads
        kvh = h // (n_q_heads // n_kv_heads)
        ph = h if n_plan_heads == n_q_heads else kvh
        row = (b * n_plan_heads + ph) * n_qb + qblk
        return b, h, kvh, qblk, BlockIdx + row.to(gl.int64) * n_kb, CatOff + row * 11, row

    @gluon.jit
    def _kv_tile(desc_k, desc_v, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, it, b, kvh, r):
        """Producer: one box of K and V (or of the pyramid, or of the tail's mean keys and values) from row ``r``
        into the first rows of ring slot ``it % STAGES``: 128 rows, or the tail's ``TAIL_ROWS``."""
        n_buf: gl.constexpr = bufs_k.type.shape[0]
        n_rows: gl.constexpr = desc_k.block_type.shape[2]
        s = it % n_buf
        phase = (it // n_buf) & 1
        mbarrier.wait(empty_k.index(s), phase ^ 1)
        mbarrier.expect(ready_k.index(s), desc_k.block_type.nbytes)
        _tma_load(desc_k, [b, kvh, r, 0], ready_k.index(s), bufs_k.index(s).slice(0, n_rows))
        mbarrier.wait(empty_v.index(s), phase ^ 1)
        mbarrier.expect(ready_v.index(s), desc_v.block_type.nbytes)
        _tma_load(desc_v, [b, kvh, r, 0], ready_v.index(s), bufs_v.index(s).slice(0, n_rows))

    @gluon.jit
    def _wait_for_prior():
        """``griddepcontrol.wait``: the launch before this one (chained) has ended and its writes are visible."""
        gl.inline_asm_elementwise("griddepcontrol.wait; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False,
                                  pack=1)

    @gluon.jit
    def _producer(args, POOLED: gl.constexpr, TAIL: gl.constexpr, PDL: gl.constexpr):
        (desc_q, desc_k, desc_v, desc_kp, desc_vp, desc_kn, desc_vn, desc_kt, desc_vt, BlockIdx, CatOff, desc_o, TailN,
         qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, q_len, k_len, n_tiles, Sched, q_smem, o_smem,
         bufs_k, bufs_v, q_bar, q_empty, tile_smem, ready_k, empty_k, ready_v, empty_v, bias) = args
        g2 = (k_len + 1) // 2
        g4 = (k_len + 3) // 4
        it = 0  # ring position, continued from tile to tile (the consumers count the same steps)
        r = 0
        tile = _next_tile(Sched)
        while tile < n_tiles:
            b, h, kvh, qblk, idx_ptr, off_ptr, row = _program_lists(tile, BlockIdx, CatOff, n_q_heads,
                                                                    n_kv_heads, n_plan_heads, n_qb, n_kb, n_tiles)
            # the tile's number and Q, once both consumers have read the last tile's into registers (the number
            # is stored before the barrier's arrival, which releases it to the consumers)
            mbarrier.wait(q_empty, (r & 1) ^ 1)
            tile_smem.store(gl.full([1], tile, gl.int32, _ONE_WARP))
            mbarrier.expect(q_bar, 2 * desc_q.block_type.nbytes)
            _tma_load(desc_q, [b, h, qblk * 128, 0], q_bar, q_smem.index(0))
            _tma_load(desc_q, [b, h, qblk * 128 + 64, 0], q_bar, q_smem.index(1))
            o_exact = gl.load(off_ptr + 1)
            if TAIL:  # read with the first offsets: its round trip passes under the tile's copies, not after them
                tail_end = gl.load(off_ptr + 10)
            for t in range(0, o_exact):
                j = gl.load(idx_ptr + t)
                _kv_tile(desc_k, desc_v, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, it, b, kvh, j * 128)
                it += 1
            if PDL == 1:  # the pyramid may still be in the making (every program waits: see vlmsparse.kernels.pdl)
                _wait_for_prior()
            # spans (entry 8 * first + n - 1; the tile starts at the first block's pooled keys), then single blocks
            if POOLED:
                lo = o_exact
                for c in gl.static_range(6):
                    hi = gl.load(off_ptr + 2 + c)
                    base = 0 if c % 3 == 0 else (g2 if c % 3 == 1 else g2 + g4)
                    groups = 64 >> (c % 3)
                    for t in range(lo, hi):
                        e = gl.load(idx_ptr + t)
                        if c < 3:
                            _kv_tile(desc_kp, desc_vp, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, it, b, kvh,
                                     base + (e // 8) * groups)
                        else:
                            _kv_tile(desc_kn[c - 3], desc_vn[c - 3], bufs_k, bufs_v, ready_k, empty_k, ready_v,
                                     empty_v, it, b, kvh, base + e * groups)
                        it += 1
                    lo = hi
            o_mask = gl.load(off_ptr + 8)
            for t in range(gl.load(off_ptr + 7), o_mask):
                j = gl.load(idx_ptr + t)
                _kv_tile(desc_k, desc_v, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, it, b, kvh, j * 128)
                it += 1
            if TAIL:
                # the tail key, one more ring step where the plan row skips something visible: the 16 rows of
                # the launcher's mean keys and values whose first is this plan row's (written by the sums' launch,
                # which a chained program waits for first)
                if tail_end > o_mask:
                    if PDL == 2:
                        _wait_for_prior()
                    _kv_tile(desc_kt, desc_vt, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, it, 0, 0, row)
                    it += 1
            # the next tile's number, drawn once this tile's copies are all issued: the atomic's round trip (the
            # producer waits for it) passes while the consumers work through the ring's last tiles
            tile = _next_tile(Sched)
            r += 1
        # no tile left: the consumers are told so by a tile number past the last, with a plain arrival
        mbarrier.wait(q_empty, (r & 1) ^ 1)
        tile_smem.store(gl.full([1], n_tiles, gl.int32, _ONE_WARP))
        mbarrier.arrive(q_bar, count=1)
        # the last program to finish sets the counter back to zero for the next launch on this stream
        if gl.atomic_add(Sched + 1, 1, sem="acq_rel") == gl.num_programs(0) - 1:
            gl.atomic_xchg(Sched, 0, sem="relaxed")
            gl.atomic_xchg(Sched + 1, 0, sem="relaxed")

    @gluon.jit
    def _bias_tables(bias, qk_scale):
        """Consumer, once per program: the span bias's tables, ``sel(i) @ bias[i // 8]^T`` a [64, 128] product whose
        column ``c`` is ``log2(p) / qk_scale`` where ``c < n * 128 / p`` and ``-2^100`` past the span (scaled, its
        probability is exactly 0; finite, so no ``0 * inf``). Ten spans a plan can hold (``_bias_index``): level 2
        of 2 blocks, level 4 of 2-4, level 8 of 3-8; span ``i``'s bfloat16 high part in column ``2 (i % 8)`` and
        its low part in the next column of tile ``i // 8`` ([128, 16], read transposed); ``sel(i)`` (``_qk``, in
        registers) has ones in those two columns. Both consumers write the same values (a benign race: equal
        bits), then fence them for the tensor cores and meet at their warp group's barrier."""
        k = gl.arange(0, 16, layout=gl.SliceLayout(0, _FILL))[None, :]
        cols = gl.arange(0, 128, layout=gl.SliceLayout(1, _FILL))[:, None]
        slot = k // 2
        # per slot of tile 0 (spans 0-7) and tile 1 (spans 8, 9): log2 p and the span's columns
        log2p0 = gl.where(slot == 0, 1.0, gl.where(slot < 4, 2.0, 3.0))
        ncols0 = gl.where(slot == 0, 128, gl.where(slot < 4, 64 + (slot - 1) * 32, 48 + (slot - 4) * 16))
        _bias_tile(bias.index(0), cols, k, qk_scale, log2p0, ncols0)
        _bias_tile(bias.index(1), cols, k, qk_scale, gl.where(slot < 2, 3.0, 0.0), gl.where(slot == 0, 112, 128))
        fence_async_shared()  # each thread's stores made visible to the tensor cores, then all of them done
        _block_barrier()

    @gluon.jit
    def _bias_tile(tile, cols, k, qk_scale, log2p, ncols):
        v = gl.where(cols < ncols, log2p / qk_scale, -1.2676506002282294e30)
        hi = v.to(gl.bfloat16)
        lo = (v - hi.to(gl.float32)).to(gl.bfloat16)
        tile.store(gl.where(k % 2 == 0, hi, lo))

    @gluon.jit
    def _bias_index(e, lv):
        """The bias table of a span with entry ``e`` (``n - 1 == e % 8``) at level index ``lv`` (0, 1, 2 for level
        2, 4, 8): 0 for level 2, ``n - 1`` (1-3) for level 4, ``n + 1`` (4-9) for level 8, held in the level's range."""
        i = e % 8 + gl.where(lv == 0, -1, gl.where(lv == 1, 0, 2))
        lo = gl.where(lv == 0, 0, gl.where(lv == 1, 1, 4))
        hi = gl.where(lv == 0, 0, gl.where(lv == 1, 3, 9))
        return gl.minimum(gl.maximum(i, lo), hi)

    @gluon.jit
    def _wide_update(qk, m_i, l_i, qk_scale):
        """One wide step's online-softmax update from its logits ``qk`` (a span's log correction and mask are
        already in them, ``_qk``): scaled, exponentiated against the new maximum. Returns the new maximum and sum,
        the probabilities and the rescale."""
        m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
        p = gl.exp2(qk * qk_scale - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        return m_new, l_i * alpha + gl.sum(p, 1), p, alpha

    @gluon.jit
    def _masked_update(qk, m_i, l_i, qk_scale, cols, limit, k_len, CAUSAL: gl.constexpr):
        """The online-softmax update of a block with token masks (causal limit per row, sequence end); a row may
        see nothing yet (its maximum stays -inf, its probabilities 0)."""
        if CAUSAL:
            qk = gl.where((cols[None, :] < k_len) & (cols[None, :] <= limit[:, None]), qk * qk_scale, float("-inf"))
        else:
            qk = qk * qk_scale + gl.where(cols < k_len, 0.0, float("-inf"))[None, :]
        m_new = gl.maximum(m_i, gl.max(qk, 1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(qk - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        return m_new, l_i * alpha + gl.sum(p, 1), p, alpha

    @gluon.jit
    def _qk(q, k_tile, zero, bias, e, t, o_exact, o_s2, o_s4, SPANS: gl.constexpr):
        """Issue step ``t``'s logits, ``Q K^T``. With ``SPANS`` the wide steps are exact before ``o_exact``, then
        spans of level 2, 4, 8 (from ``o_exact``, ``o_s2``, ``o_s4``), and a span (entry ``e``: ``n - 1 == e % 8``)
        first issues the bias product ``sel @ bias[_bias_index(e, level)]^T`` into the same accumulator (one more
        k-16 matmul: the log correction and the mask cost no instruction of the softmax, whose update is then the
        exact block's)."""
        if SPANS:
            lv = (t >= o_s2).to(gl.int32) + (t >= o_s4).to(gl.int32)
            i = _bias_index(e, lv)
            kk = gl.arange(0, 16, layout=gl.SliceLayout(0, _SEL))
            sel = gl.where(kk // 2 == i % 8, 1.0, 0.0).to(gl.bfloat16)[None, :] + gl.zeros([64, 16], gl.bfloat16,
                                                                                             _SEL)
            qk = warpgroup_mma(sel, bias.index(i // 8).permute((1, 0)), zero, use_acc=False, is_async=True)
            # an exact step issues the bias product too (no branch in the loop) and drops it
            qk = warpgroup_mma(q, k_tile.permute((1, 0)), qk, use_acc=t >= o_exact, is_async=True)
        else:
            qk = warpgroup_mma(q, k_tile.permute((1, 0)), zero, use_acc=False, is_async=True)
        return qk

    @gluon.jit
    def _wide_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it, idx_ptr, o_exact,
                    o_s2, o_s4, stop, qk_scale, bias, SPANS: gl.constexpr):
        """Consumer: the wide steps ``0 .. stop`` on 128-key tiles in one pipeline (``Q K^T`` of step ``t`` issued
        before ``P V`` of step ``t - 1``): exact blocks, and with ``SPANS`` the spans of every level after them.
        With the span bias a tensor-core product every wide step has the same softmax, so one loop takes them all,
        with one start and one drain per tile. Every row has a finite logit in every step."""
        n_buf: gl.constexpr = bufs_k.type.shape[0]
        zero = gl.zeros([64, 128], gl.float32, _ACC)
        n = stop
        if n > 0:
            e = 0
            e_next = 0
            if SPANS:  # each span's entry read a step ahead
                e = gl.load(idx_ptr)
                e_next = gl.load(idx_ptr + 1, mask=n > 1, other=0)
            s = it % n_buf
            mbarrier.wait(ready_k.index(s), (it // n_buf) & 1)
            qk = _qk(q, bufs_k.index(s), zero, bias, e, 0, o_exact, o_s2, o_s4, SPANS)
            qk = warpgroup_mma_wait(0, deps=(qk, ))
            mbarrier.arrive(empty_k.index(s), count=1)
            m_i, l_i, p, alpha = _wide_update(qk, m_i, l_i, qk_scale)
            acc = acc * alpha[:, None]
            p16 = gl.convert_layout(p.to(q.dtype), _P)
            prev = s
            for t in range(1, n):
                cur = it + t
                s = cur % n_buf
                if SPANS:
                    e = e_next
                    e_next = gl.load(idx_ptr + t + 1, mask=t + 1 < n, other=0)
                mbarrier.wait(ready_k.index(s), (cur // n_buf) & 1)
                qk = _qk(q, bufs_k.index(s), zero, bias, e, t, o_exact, o_s2, o_s4, SPANS)
                mbarrier.wait(ready_v.index(prev), ((cur - 1) // n_buf) & 1)
                acc = warpgroup_mma(p16, bufs_v.index(prev), acc, is_async=True)
                qk = warpgroup_mma_wait(1, deps=(qk, ))
                mbarrier.arrive(empty_k.index(s), count=1)
                m_i, l_i, p, alpha = _wide_update(qk, m_i, l_i, qk_scale)
                # the new P goes into the operand registers only once the P V reading the old one is done
                acc = warpgroup_mma_wait(0, deps=(acc, ))
                mbarrier.arrive(empty_v.index(prev), count=1)
                p16 = gl.convert_layout(p.to(q.dtype), _P)
                acc = acc * alpha[:, None]
                prev = s
            mbarrier.wait(ready_v.index(prev), ((it + n - 1) // n_buf) & 1)
            acc = warpgroup_mma(p16, bufs_v.index(prev), acc, is_async=True)
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(empty_v.index(prev), count=1)
        return m_i, l_i, acc, it + n

    @gluon.jit
    def _narrow_pv(q, p, alpha, acc, bufs_v, ready_v, empty_v, s, phase):
        """Consumer: a narrow step's ``P V``: the accumulator rescaled by ``alpha``, then ``p`` (``[64, W]``, rounded
        to q's dtype) times the first ``W`` rows of ring slot ``s``'s V tile, waited for; the slot's V released."""
        W: gl.constexpr = p.type.shape[1]
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, _ACC))[:, None]
        p16 = gl.convert_layout(p.to(q.dtype), _P)
        mbarrier.wait(ready_v.index(s), phase)
        acc = warpgroup_mma(p16, bufs_v.index(s).slice(0, W), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        mbarrier.arrive(empty_v.index(s), count=1)
        return acc

    @gluon.jit
    def _narrow_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it, idx_ptr, start, stop,
                      qk_scale, k_len, P: gl.constexpr):
        """Consumer: single pooled blocks of level ``P``, each the first ``128 / P`` rows of its tile (a narrow
        matmul), logits ``+ log2(count)``, pooled keys past the sequence's last group masked. Not pipelined."""
        n_buf: gl.constexpr = bufs_k.type.shape[0]
        W: gl.constexpr = 128 // P
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, W, 16])
        row_acc: gl.constexpr = gl.SliceLayout(1, _ACC)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        zero = gl.zeros([64, W], gl.float32, s_layout)
        n_groups = (k_len + P - 1) // P
        offs = gl.arange(0, W, layout=gl.SliceLayout(0, s_layout))
        m_w = gl.convert_layout(m_i, row_s)
        l_w = gl.convert_layout(l_i, row_s)
        q_w = gl.convert_layout(q, gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))
        for t in range(start, stop):
            cur = it + (t - start)
            s = cur % n_buf
            phase = (cur // n_buf) & 1
            j = gl.load(idx_ptr + t)
            mbarrier.wait(ready_k.index(s), phase)
            qk = warpgroup_mma(q_w, bufs_k.index(s).slice(0, W).permute((1, 0)), zero, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(0, deps=(qk, ))
            mbarrier.arrive(empty_k.index(s), count=1)
            g = j * W + offs
            count = gl.minimum(k_len - g * P, P).to(gl.float32)
            bias = gl.where(g < n_groups, gl.log2(gl.maximum(count, 1.0)), float("-inf"))
            qk = qk * qk_scale + bias[None, :]
            m_new = gl.maximum(m_w, gl.max(qk, 1))
            p = gl.exp2(qk - m_new[:, None])
            alpha = gl.exp2(m_w - m_new)
            l_w = l_w * alpha + gl.sum(p, 1)
            m_w = m_new
            acc = _narrow_pv(q, p, alpha, acc, bufs_v, ready_v, empty_v, s, phase)
        n = gl.maximum(stop - start, 0)
        return gl.convert_layout(m_w, row_acc), gl.convert_layout(l_w, row_acc), acc, it + n

    @gluon.jit
    def _masked_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it, idx_ptr, start, stop,
                      qk_scale, limit, k_len, CAUSAL: gl.constexpr):
        """Consumer: blocks with token masks (the causal diagonal, the sequence end). A row may see nothing yet."""
        n_buf: gl.constexpr = bufs_k.type.shape[0]
        zero = gl.zeros([64, 128], gl.float32, _ACC)
        offs = gl.arange(0, 128, layout=gl.SliceLayout(0, _ACC))
        for t in range(start, stop):
            cur = it + (t - start)
            s = cur % n_buf
            phase = (cur // n_buf) & 1
            cols = gl.load(idx_ptr + t) * 128 + offs
            mbarrier.wait(ready_k.index(s), phase)
            qk = warpgroup_mma(q, bufs_k.index(s).permute((1, 0)), zero, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(0, deps=(qk, ))
            mbarrier.arrive(empty_k.index(s), count=1)
            m_i, l_i, p, alpha = _masked_update(qk, m_i, l_i, qk_scale, cols, limit, k_len, CAUSAL)
            acc = acc * alpha[:, None]
            p16 = gl.convert_layout(p.to(q.dtype), _P)
            mbarrier.wait(ready_v.index(s), phase)
            acc = warpgroup_mma(p16, bufs_v.index(s), acc, is_async=True)
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            mbarrier.arrive(empty_v.index(s), count=1)
        return m_i, l_i, acc, it + gl.maximum(stop - start, 0)

    @gluon.jit
    def _tail_step(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it, TailN, row, qk_scale,
                   W: gl.constexpr, PDL: gl.constexpr):
        """Consumer: tail aggregation as one more ring step, a narrow one, and the tile's last: the tile's first row
        is the mean of the wholly visible keys this plan row skips (its value the mean of their values), logit
        ``+ log2(count)``; the tile's other rows (other plan rows' tail keys, or zeros) are masked. The plans this
        kernel takes with a tail skip no diagonal block, so every row has seen a key before this step. ``W``: the
        rows the producer copied (``TAIL_ROWS``, its copy box's).

        Being the last step, it also normalises: the accumulator is scaled once by ``alpha / l`` (the rescale and
        the output's ``1 / l`` in one product) and the tail's probability enters as ``p / l``, so the tile's
        epilogue has no division of its own. Returns the normalised output and the ring position."""
        n_buf: gl.constexpr = bufs_k.type.shape[0]
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, W, 16])
        row_acc: gl.constexpr = gl.SliceLayout(1, _ACC)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        s = it % n_buf
        phase = (it // n_buf) & 1
        mbarrier.wait(ready_k.index(s), phase)
        # the count, written by the sums' launch: chained, this thread waits for it too (the producer already did,
        # before copying the tile, so the wait returns at once)
        if PDL != 0:
            _wait_for_prior()
        count = gl.load(TailN + row)
        q_w = gl.convert_layout(q, gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))
        qk = warpgroup_mma(q_w, bufs_k.index(s).slice(0, W).permute((1, 0)), gl.zeros([64, W], gl.float32, s_layout),
                           use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(0, deps=(qk, ))
        mbarrier.arrive(empty_k.index(s), count=1)
        offs = gl.arange(0, W, layout=gl.SliceLayout(0, s_layout))
        bias = gl.where((offs == 0) & (count > 0.5), gl.log2(gl.maximum(count, 1.0)), float("-inf"))
        # the tail key's logit per row (every other column is masked): one exponential a row, not one a column
        s_tail = gl.max(qk * qk_scale + bias[None, :], 1)
        m_w = gl.convert_layout(m_i, row_s)
        m_new = gl.maximum(m_w, s_tail)
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        p_tail = gl.exp2(s_tail - m_safe)
        alpha = gl.exp2(m_w - m_safe)
        l_new = gl.convert_layout(l_i, row_s) * alpha + p_tail
        # a row with nothing to attend has l == 0 and acc == 0: it returns zeros, never NaN
        inv = 1.0 / gl.where(l_new > 0.0, l_new, 1.0)
        acc = acc * gl.convert_layout(alpha * inv, row_acc)[:, None]
        p = gl.where(offs[None, :] == 0, (p_tail * inv)[:, None], 0.0)
        p16 = gl.convert_layout(p.to(q.dtype), _P)
        mbarrier.wait(ready_v.index(s), phase)
        acc = warpgroup_mma(p16, bufs_v.index(s).slice(0, W), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        mbarrier.arrive(empty_v.index(s), count=1)
        return acc, it + 1

    @gluon.jit
    def _consumer_tile(args, tile, it, WG: gl.constexpr, CAUSAL: gl.constexpr, POOLED: gl.constexpr,
                       TAIL: gl.constexpr, PDL: gl.constexpr):
        """One query tile's 64 rows of this consumer (its Q loaded): every step of its plan row, the tail, the
        output. Returns the ring position after its steps."""
        (desc_q, desc_k, desc_v, desc_kp, desc_vp, desc_kn, desc_vn, desc_kt, desc_vt, BlockIdx, CatOff, desc_o, TailN,
         qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, q_len, k_len, n_tiles, Sched, q_smem, o_smem,
         bufs_k, bufs_v, q_bar, q_empty, tile_smem, ready_k, empty_k, ready_v, empty_v, bias) = args
        b, h, kvh, qblk, idx_ptr, off_ptr, row = _program_lists(tile, BlockIdx, CatOff, n_q_heads, n_kv_heads,
                                                                n_plan_heads, n_qb, n_kb, n_tiles)
        # a static index: Q behind a run-time index (two tiles' buffers) gave wrong products on an H200. Q is read
        # into registers (the matmuls' A operand from registers, as P V's P) and released at once: the next tile's Q
        # and first K/V copies load during the whole of this tile
        q = q_smem.index(WG).load(_P)
        # the reads of Q ordered before the producer's next copy into it (an async-proxy write): a proxy fence, then
        # the release
        fence_async_shared()
        mbarrier.arrive(q_empty, count=1)
        row_layout: gl.constexpr = gl.SliceLayout(1, _ACC)
        m_i = gl.full([64], float("-inf"), gl.float32, row_layout)
        l_i = gl.full([64], 0.0, gl.float32, row_layout)
        acc = gl.zeros([64, 128], gl.float32, _ACC)
        o_exact = gl.load(off_ptr + 1)
        o_s2 = gl.load(off_ptr + 2)
        o_s4 = gl.load(off_ptr + 3)
        o_s8 = gl.load(off_ptr + 4)
        o_p2 = gl.load(off_ptr + 5)
        o_p4 = gl.load(off_ptr + 6)
        o_p8 = gl.load(off_ptr + 7)
        o_mask = gl.load(off_ptr + 8)
        # exact blocks and spans in one pipeline; a binary kernel reads a pooled block as skipped
        n_wide = o_exact
        if POOLED:
            n_wide = o_s8
        m_i, l_i, acc, it = _wide_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it,
                                        idx_ptr, o_exact, o_s2, o_s4, n_wide, qk_scale, bias, POOLED)
        if POOLED:
            if o_p8 > o_s8:  # single pooled blocks are rare in the default plans: skip their set-up when absent
                m_i, l_i, acc, it = _narrow_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i,
                                                  acc, it, idx_ptr, o_s8, o_p2, qk_scale, k_len, 2)
                m_i, l_i, acc, it = _narrow_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i,
                                                  acc, it, idx_ptr, o_p2, o_p4, qk_scale, k_len, 4)
                m_i, l_i, acc, it = _narrow_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i,
                                                  acc, it, idx_ptr, o_p4, o_p8, qk_scale, k_len, 8)
        if TAIL:
            has_tail = gl.load(off_ptr + 10) > o_mask  # this program's plan skips something visible
        rows = qblk * 128 + WG * 64 + gl.arange(0, 64, layout=row_layout)
        limit = rows + (k_len - q_len)
        m_i, l_i, acc, it = _masked_steps(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it,
                                          idx_ptr, o_p8, o_mask, qk_scale, limit, k_len, CAUSAL)
        # a row with nothing to attend has l == 0 and acc == 0: it returns zeros, never NaN. A tail step normalises
        # as it adds the tail key (one product of the accumulator, not two)
        if TAIL:
            if has_tail:
                out, it = _tail_step(q, bufs_k, bufs_v, ready_k, empty_k, ready_v, empty_v, m_i, l_i, acc, it, TailN,
                                     row, qk_scale, desc_kt.block_type.shape[2], PDL)
            else:
                out = acc * (1.0 / gl.where(l_i > 0.0, l_i, 1.0))[:, None]
        else:
            out = acc * (1.0 / gl.where(l_i > 0.0, l_i, 1.0))[:, None]
        # the output through shared memory and one TMA copy (rows past the sequence's end are not written): the last
        # tile's copy has read this consumer's buffer by now (waited for, normally long done), then every thread's
        # rows stored, made visible to the async proxy, and the copy issued
        tma.store_wait(0)
        o_smem.index(WG).store(out.to(desc_o.dtype))
        fence_async_shared()
        _block_barrier()
        _tma_store(desc_o, [b, h, qblk * 128 + WG * 64, 0], o_smem.index(WG))
        return it

    @gluon.jit
    def _consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, POOLED: gl.constexpr, TAIL: gl.constexpr,
                  PDL: gl.constexpr):
        (desc_q, desc_k, desc_v, desc_kp, desc_vp, desc_kn, desc_vn, desc_kt, desc_vt, BlockIdx, CatOff, desc_o, TailN,
         qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, q_len, k_len, n_tiles, Sched, q_smem, o_smem,
         bufs_k, bufs_v, q_bar, q_empty, tile_smem, ready_k, empty_k, ready_v, empty_v, bias) = args
        if POOLED:
            _bias_tables(bias, qk_scale)
        it = 0
        r = 0
        mbarrier.wait(q_bar, 0)
        tile = gl.max(tile_smem.load(_VEC), 0)
        while tile < n_tiles:
            it = _consumer_tile(args, tile, it, WG, CAUSAL, POOLED, TAIL, PDL)
            r += 1
            mbarrier.wait(q_bar, r & 1)
            tile = gl.max(tile_smem.load(_VEC), 0)
        tma.store_wait(0)  # the last output's copy done before the program ends

    @gluon.jit
    def _consumer_1(args, CAUSAL: gl.constexpr, POOLED: gl.constexpr, TAIL: gl.constexpr, PDL: gl.constexpr):
        _consumer(args, 1, CAUSAL, POOLED, TAIL, PDL)

    @gluon.jit
    def _pyramid_ws_fwd(desc_q, desc_k, desc_v, desc_kp, desc_vp, desc_kn2, desc_vn2, desc_kn4, desc_vn4, desc_kn8,
                        desc_vn8, desc_kt, desc_vt, BlockIdx, CatOff, desc_o, TailN,
                        qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, q_len, k_len, n_tiles, Sched,
                        CAUSAL: gl.constexpr, POOLED: gl.constexpr, TAIL: gl.constexpr, PDL: gl.constexpr,
                        STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
        q_smem = gl.allocate_shared_memory(desc_q.dtype, [2, 64, 128], _SMEM_Q)
        o_smem = gl.allocate_shared_memory(desc_o.dtype, [2, 64, 128], _SMEM_Q)  # each consumer's output tile
        bufs_k = gl.allocate_shared_memory(desc_k.dtype, [STAGES, 128, 128], _SMEM_KV)
        bufs_v = gl.allocate_shared_memory(desc_v.dtype, [STAGES, 128, 128], _SMEM_KV)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        tile_smem = gl.allocate_shared_memory(gl.int32, [1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        bias = gl.allocate_shared_memory(gl.bfloat16, [2, 128, 16], _SMEM_BIAS)  # bfloat16 whatever q is
        # single pooled blocks of level 2, 4, 8: boxes of their own 64, 32, 16 rows (only those are read)
        desc_kn = (desc_kn2, desc_kn4, desc_kn8)
        desc_vn = (desc_vn2, desc_vn4, desc_vn8)
        ready_k = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty_k = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        ready_v = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty_v = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        mbarrier.init(q_empty, count=2)  # one arrival per consumer warp group
        for s in gl.static_range(STAGES):
            mbarrier.init(ready_k.index(s), count=1)
            mbarrier.init(ready_v.index(s), count=1)
            mbarrier.init(empty_k.index(s), count=2)  # one arrival per consumer warp group
            mbarrier.init(empty_v.index(s), count=2)
        args = (desc_q, desc_k, desc_v, desc_kp, desc_vp, desc_kn, desc_vn, desc_kt, desc_vt, BlockIdx, CatOff, desc_o,
                TailN, qk_scale, n_q_heads, n_kv_heads, n_plan_heads, n_qb, n_kb, q_len, k_len, n_tiles, Sched, q_smem,
                o_smem, bufs_k, bufs_v, q_bar, q_empty, tile_smem, ready_k, empty_k, ready_v, empty_v, bias)
        # the flags as arguments of their own: in the tuple they would reach the partitions as run-time values
        gl.warp_specialize([
            (_consumer, (args, 0, CAUSAL, POOLED, TAIL, PDL)),
            (_consumer_1, (args, CAUSAL, POOLED, TAIL, PDL)),
            (_producer, (args, POOLED, TAIL, PDL)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def compile_for_sm90(pooled: bool, tail: bool, pdl: int = 0, causal: bool = True):
    """Compile the kernel for sm_90 on any machine, GPU or not (Triton's own ``ptxas``), bfloat16, with the
    launch's flags and pointer alignment: the check that this Triton's Gluon still takes the kernel, which a machine
    without a Hopper GPU cannot run. Returns Triton's compiled kernel (``asm["cubin"]``, ``metadata.shared``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = _pyramid_ws_fwd
    box = lambda rows: f"tensordesc<bf16[1, 1, {rows}, {HEAD_DIM}],{_box_layout(rows)!r}>"  # noqa: E731
    # the launch's boxes (others 128 rows; without tail the launch passes K and V's descriptors for the tail's)
    tail_rows = TAIL_ROWS if tail else BLOCK
    rows = {"desc_q": HALF, "desc_o": HALF, "desc_kt": tail_rows, "desc_vt": tail_rows}
    if pooled:  # the single pooled blocks' boxes (without pooled levels the launch passes K and V's)
        rows.update({f"desc_{kv}n{p}": BLOCK // p for p in (2, 4, 8) for kv in "kv"})
    types = {"BlockIdx": "*i32", "CatOff": "*i32", "TailN": "*fp32", "qk_scale": "fp32",
             "Sched": "*i32"}
    flags = dict(CAUSAL=causal, POOLED=pooled, TAIL=tail, PDL=pdl, STAGES=STAGES, CONSUMER_REGS=REGS[0],
                 PRODUCER_REGS=REGS[1])
    signature = {}
    for name in fn.arg_names:
        if name in flags:
            signature[name] = "constexpr"
        elif name.startswith("desc_"):
            signature[name] = box(rows.get(name, BLOCK))
        else:
            signature[name] = types.get(name, "i32")
    constexprs = {(fn.arg_names.index(n),): v for n, v in flags.items()}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if signature[n].startswith("*")}
    source = GluonASTSource(fn, signature, constexprs, attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 128), options=dict(num_warps=4, maxnreg=REGS[2]))


def _index(device: torch.device) -> int:
    """The CUDA device's index (the current device for a bare ``cuda``)."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _is_sm90(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] == 9


_COUNTERS: dict = {}


def _schedule_counter(index: int) -> torch.Tensor:
    """The tile counter of launches on the current stream of CUDA device ``index`` (two int32: next tile, programs
    done). Zero between launches: the last program of a launch sets it back. One per stream, so launches on two
    streams never share one."""
    key = (index, torch.cuda.current_stream(index).cuda_stream)
    counter = _COUNTERS.get(key)
    if counter is None:
        counter = _COUNTERS[key] = torch.zeros(2, dtype=torch.int32, device=torch.device("cuda", index))
    return counter


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=None)
def _box_layout(rows: int):
    # 128-byte swizzle of 16-bit elements: the same layout for bfloat16 and float16
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, HEAD_DIM], gl.bfloat16)


@functools.lru_cache(maxsize=None)
def _descriptor_defaults() -> tuple[tuple[str, object], ...]:
    """The descriptor dataclass's fields that :func:`_descriptor` does not set, with their defaults (Triton adds
    fields from version to version: 3.9's ``round_f32_to_tf32``)."""
    own = {"base", "shape", "strides", "block_shape", "layout", "padding"}
    return tuple((f.name, f.default) for f in dataclasses.fields(GluonDescriptor)
                 if f.name not in own and f.default is not dataclasses.MISSING)


def _descriptor(t: torch.Tensor, rows: int):
    """A 4-D TMA descriptor of ``t`` ``[B, H, L, D]`` with ``[1, 1, rows, D]`` boxes (rows past L read zeros): the
    fields ``GluonDescriptor.from_tensor`` sets.

    Built without the dataclass's checks (:func:`ws_supported` made them once for the call): five of them per call
    were about a quarter of the launch's host time."""
    d = object.__new__(GluonDescriptor)
    d.base, d.shape, d.strides = t, list(t.shape), list(t.stride())
    d.block_shape, d.layout, d.padding = [1, 1, rows, HEAD_DIM], _box_layout(rows), "zero"
    for name, value in _descriptor_defaults():
        setattr(d, name, value)
    return d


def pyramid_attention_ws(q, k, v, plan, kp_all, vp_all, out, scale_log2: float, causal: bool,
                         tail_key: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                         pdl: int = 0) -> torch.Tensor:
    """Launch the kernel on a compiled plan (the caller checked :func:`ws_supported` and the arguments).
    ``kp_all`` / ``vp_all``: the concatenated pyramid ``[B, Hkv, G2 + G4 + G8, D]``, or ``None`` for a plan with no
    pooled block (K and V stand in; no step reads them). ``tail_key``: tail aggregation, the launcher's
    :func:`~vlmsparse.kernels.pyramid.skipped_key_sums` with ``means`` (mean keys, mean values ``[rows, D]`` in
    q's dtype, counts) of a plan that skips no block meeting the diagonal.
    ``pdl``: chained to the launch before (:func:`~vlmsparse.kernels.pyramid.chain_wait`: 1 that launch may still
    be making the pyramid, 2 only the sums), 0 not chained."""
    b, hq, lq, _ = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    n_qb, n_kb = cdiv(lq, BLOCK), cdiv(lk, BLOCK)
    desc_q = _descriptor(q, HALF)
    desc_o = _descriptor(out, HALF)
    desc_k, desc_v = _descriptor(k, BLOCK), _descriptor(v, BLOCK)
    if kp_all is None:
        desc_kp, desc_vp = desc_k, desc_v
        desc_n = (desc_k, desc_v) * 3
    else:
        desc_kp, desc_vp = _descriptor(kp_all, BLOCK), _descriptor(vp_all, BLOCK)
        desc_n = tuple(_descriptor(t, BLOCK // p) for p in (2, 4, 8) for t in (kp_all, vp_all))
    if tail_key is None:
        desc_kt, desc_vt, tail_n = desc_k, desc_v, out
    else:
        mean_k, mean_v, tail_n = tail_key
        desc_kt, desc_vt = _descriptor(mean_k[None, None], TAIL_ROWS), _descriptor(mean_v[None, None], TAIL_ROWS)
    n_tiles = b * hq * n_qb
    index = _index(q.device)
    _pyramid_ws_fwd[(min(n_tiles, _sm_count(index)), )](
        desc_q, desc_k, desc_v, desc_kp, desc_vp, *desc_n, desc_kt, desc_vt, plan.block_idx, plan.cat_offsets, desc_o,
        tail_n, scale_log2,
        hq, hkv, plan.plan_heads, n_qb, n_kb, lq, lk, n_tiles,
        _schedule_counter(index), CAUSAL=causal, POOLED=kp_all is not None, TAIL=tail_key is not None, PDL=pdl,
        STAGES=STAGES, CONSUMER_REGS=REGS[0], PRODUCER_REGS=REGS[1], num_warps=4, maxnreg=REGS[2],
        **({"launch_pdl": True} if pdl else {}),
    )
    return out
