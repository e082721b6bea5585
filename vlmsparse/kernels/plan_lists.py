"""Compiling a plan: per (batch, plan head, query block), the kept key blocks grouped by what the kernel does.

Categories, in the order the kernel visits them:

1. exact blocks wholly visible;
2-4. *spans* of pooled blocks at level 2, 4, 8: up to ``p`` consecutive wholly visible blocks of one level,
   whose ``p * block_n / p = block_n`` pooled keys lie side by side in the pyramid, so the kernel reads them as
   one full tile (a level-p block then costs about 1/p of an exact one). An entry is ``8 * first + (n - 1)``
   for ``n`` blocks from block ``first``;
5-7. single pooled blocks at level 2, 4, 8 (one narrow tile each): what is left of a run of consecutive
   same-level blocks after its full spans, when that remainder is shorter than ``SPAN_MIN_REMAINDER[p]``
   (a shorter remainder costs less as narrow tiles than as one part-filled span), and a ragged last block;
8. blocks that need token-level masks: those meeting the causal diagonal (computed exactly whatever their
   level) and an exact last block that ends before a full block.

Then the visible blocks the plan skips, which only tail aggregation reads: those meeting the diagonal (9) and
those wholly visible (10). Invisible blocks are dropped. Runs are cut greedily from the first block of a run.
The grouping changes what a tile holds, never the maths: every pooled key is the one the plan names. One Triton
launch compiles the whole plan; the plain-PyTorch version defines the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .blocks import FULL, PARTIAL, block_classes
from .validation import triton_can_run

N_CATEGORIES = 10
KEPT_CATEGORIES = 8  # categories 1-8 are visited by the attention loops; 9-10 (skipped) by tail aggregation
#: A run's remainder of ``r < p`` blocks at level ``p`` goes into one part-filled span when ``r`` is at least
#: this, else into ``r`` narrow tiles. Measured per-tile costs (H200, v9, notes/kernel.md): a narrow tile of
#: level 2 / 4 / 8 about 1.1 / 0.62 / 0.40 of an exact block, a full-width tile about 1.1.
SPAN_MIN_REMAINDER = {2: 2, 4: 2, 8: 3}
#: An entry of a span category: ``SPAN_CODE * first block + (blocks - 1)``.
SPAN_CODE = 8


@dataclass
class CompiledPlan:
    """A plan as the kernel reads it.

    ``block_idx`` int32 ``[B * Hm * nQB, nKB]``: row ``r`` lists its visible key blocks by category, in increasing
    order within a category (entries past the last visible one are unspecified); ``cat_offsets`` int32
    ``[B * Hm * nQB, N_CATEGORIES + 1]``: category ``c`` occupies ``block_idx[r, off[c - 1]:off[c]]``, ``off[0] = 0``.
    """

    block_idx: torch.Tensor
    cat_offsets: torch.Tensor
    plan_heads: int


def compile_plan(
    levels: torch.Tensor, q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True
) -> CompiledPlan:
    """Compile ``levels [B, Hm, nQB, nKB]`` into the kernel's per-query-block lists (one launch, no host sync)."""
    if not triton_can_run(levels.device):
        return compile_plan_torch(levels, q_len, k_len, block_m, block_n, causal)
    b, hm, n_qb, n_kb = levels.shape
    rows = b * hm * n_qb
    lv = levels.contiguous()
    block_idx = torch.empty(rows, n_kb, device=levels.device, dtype=torch.int32)
    offsets = torch.empty(rows, N_CATEGORIES + 1, device=levels.device, dtype=torch.int32)
    _plan_lists_kernel[(rows,)](
        lv, block_idx, offsets, n_qb, n_kb, q_len, k_len,
        CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, NKB=max(16, triton.next_power_of_2(n_kb)),
        MIN2=SPAN_MIN_REMAINDER[2], MIN4=SPAN_MIN_REMAINDER[4], MIN8=SPAN_MIN_REMAINDER[8],
    )
    return CompiledPlan(block_idx, offsets, hm)


def _runs(elig: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``elig [R, nKB]`` (bool): spans (bool, at each span's first block), each span's block count, and the
    eligible blocks left to narrow tiles, cutting every run of consecutive eligible blocks greedily."""
    n_kb = elig.shape[-1]
    col = torch.arange(n_kb, device=elig.device).expand_as(elig)
    prev = torch.nn.functional.pad(elig[:, :-1], (1, 0), value=False)
    nxt = torch.nn.functional.pad(elig[:, 1:], (0, 1), value=False)
    start = torch.where(elig & ~prev, col, -1).cummax(-1).values
    end = torch.where(elig & ~nxt, col, n_kb).flip(-1).cummin(-1).values.flip(-1)
    pos, run = col - start, end - start + 1
    whole = run // p * p
    part_ok = run - whole >= SPAN_MIN_REMAINDER[p]
    span = elig & (pos % p == 0) & ((pos < whole) | ((pos == whole) & part_ok))
    narrow = elig & (pos >= whole) & ~part_ok
    return span, torch.clamp(run - pos, max=p), narrow


def compile_plan_torch(
    levels: torch.Tensor, q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True
) -> CompiledPlan:
    """:func:`compile_plan` in plain PyTorch (the definition; used for CPU tensors)."""
    b, hm, n_qb, n_kb = levels.shape
    cls = block_classes(q_len, k_len, block_m, block_n, causal, levels.device)
    lv = levels.to(torch.int32).reshape(-1, n_qb, n_kb)
    full = (cls == FULL).expand_as(lv)
    partial = (cls == PARTIAL).expand_as(lv)
    ragged = torch.zeros(n_kb, dtype=torch.bool, device=levels.device)
    if k_len % block_n:
        ragged[-1] = True
    col = torch.arange(n_kb, device=levels.device, dtype=torch.int32).expand_as(lv)
    cat = torch.zeros_like(lv)
    code = col.clone()
    cat = torch.where(full & (lv == 1) & ~ragged, 1, cat)
    for i, p in enumerate((2, 4, 8)):
        elig = (full & (lv == p) & ~ragged).reshape(-1, n_kb)
        span, blocks, narrow = (t.reshape(lv.shape) for t in _runs(elig, p))
        cat = torch.where(span, 2 + i, cat)
        code = torch.where(span, col * SPAN_CODE + blocks.to(torch.int32) - 1, code)
        cat = torch.where(narrow | (full & (lv == p) & ragged), 5 + i, cat)
    cat = torch.where((partial & (lv > 0)) | (full & (lv == 1) & ragged), 8, cat)
    cat = torch.where(partial & (lv == 0), 9, cat)
    cat = torch.where(full & (lv == 0), 10, cat)
    key = torch.where(cat > 0, cat * n_kb + col, (N_CATEGORIES + 1) * n_kb + col)
    order = torch.argsort(key, dim=-1)
    idx = torch.gather(code, -1, order).to(torch.int32)
    counts = torch.stack([(cat == c).sum(-1) for c in range(1, N_CATEGORIES + 1)], -1)
    offsets = torch.nn.functional.pad(counts.cumsum(-1), (1, 0)).to(torch.int32)
    return CompiledPlan(idx.reshape(-1, n_kb).contiguous(), offsets.reshape(-1, N_CATEGORIES + 1).contiguous(), hm)


@triton.jit
def _append(idx_row, j, keep, count):
    """Write the entries ``j`` where ``keep`` after the ``count`` already listed; return the new count."""
    k = keep.to(tl.int32)
    tl.store(idx_row + count + tl.cumsum(k, 0) - 1, j, mask=k != 0)
    return count + tl.sum(k, 0)


@triton.jit
def _max_fn(a, b):
    return tl.maximum(a, b)


@triton.jit
def _min_fn(a, b):
    return tl.minimum(a, b)


@triton.jit
def _block_state(lv_row, j, n_kb, qblk, q_len, k_len,
                 CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Level, wholly visible, meets the diagonal, ragged last block: for the key blocks ``j`` of one row."""
    in_row = (j >= 0) & (j < n_kb)
    lv = tl.load(lv_row + j, mask=in_row, other=0).to(tl.int32)
    key_start = j * BLOCK_N
    key_end = tl.minimum(key_start + BLOCK_N, k_len)
    if CAUSAL:
        offset = k_len - q_len
        first = qblk * BLOCK_M
        last = tl.minimum(first + BLOCK_M, q_len) - 1
        full = in_row & (key_end <= first + offset + 1)
        partial = in_row & (key_end > first + offset + 1) & (key_start <= last + offset)
    else:
        full = in_row
        partial = j < -1
    ragged = (j == n_kb - 1) & (k_len % BLOCK_N != 0)
    return lv, full, partial, ragged


@triton.jit
def _spans(j, n_kb, lv, full, ragged, lv_prev, ok_prev, lv_next, ok_next, P: tl.constexpr, MIN_REM: tl.constexpr):
    """Spans (their entries and where they start) and single blocks of level ``P``, as ``_runs`` defines them.
    ``ok_prev`` / ``ok_next``: the block before / after is wholly visible and not the ragged last one."""
    at_p = full & (lv == P)
    span = j < 0
    code = j
    narrow = at_p
    if tl.max(at_p.to(tl.int32), 0) > 0:  # the runs only where the row has blocks of this level
        elig = at_p & (ragged == 0)
        start = tl.associative_scan(tl.where(elig & ((lv_prev != P) | (ok_prev == 0)), j, -1), 0, _max_fn)
        end = tl.associative_scan(tl.where(elig & ((lv_next != P) | (ok_next == 0)), j, n_kb), 0, _min_fn,
                                  reverse=True)
        pos = j - start
        run = end - start + 1
        whole = run // P * P
        part_ok = (run - whole) >= MIN_REM
        span = elig & (pos % P == 0) & ((pos < whole) | ((pos == whole) & part_ok))
        narrow = (elig & (pos >= whole) & (part_ok == 0)) | (at_p & ragged)
        code = j * 8 + tl.minimum(run - pos, P) - 1
    return span, code, narrow


@triton.jit
def _plan_lists_kernel(Levels, BlockIdx, CatOff, n_qb, n_kb, q_len, k_len,
                       CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NKB: tl.constexpr,
                       MIN2: tl.constexpr, MIN4: tl.constexpr, MIN8: tl.constexpr):
    row = tl.program_id(0)
    qblk = row % n_qb
    j = tl.arange(0, NKB)
    lv_row = Levels + row.to(tl.int64) * n_kb
    lv, full, partial, ragged = _block_state(lv_row, j, n_kb, qblk, q_len, k_len, CAUSAL, BLOCK_M, BLOCK_N)
    lv_a, full_a, _, ragged_a = _block_state(lv_row, j - 1, n_kb, qblk, q_len, k_len, CAUSAL, BLOCK_M, BLOCK_N)
    lv_b, full_b, _, ragged_b = _block_state(lv_row, j + 1, n_kb, qblk, q_len, k_len, CAUSAL, BLOCK_M, BLOCK_N)
    ok_a = full_a & (ragged_a == 0)
    ok_b = full_b & (ragged_b == 0)
    s2, c2, n2 = _spans(j, n_kb, lv, full, ragged, lv_a, ok_a, lv_b, ok_b, 2, MIN2)
    s4, c4, n4 = _spans(j, n_kb, lv, full, ragged, lv_a, ok_a, lv_b, ok_b, 4, MIN4)
    s8, c8, n8 = _spans(j, n_kb, lv, full, ragged, lv_a, ok_a, lv_b, ok_b, 8, MIN8)
    idx_row = BlockIdx + row.to(tl.int64) * n_kb
    off_row = CatOff + row * 11
    count = tl.sum(j * 0, 0)
    tl.store(off_row, count)
    count = _append(idx_row, j, full & (lv == 1) & (ragged == 0), count)
    tl.store(off_row + 1, count)
    count = _append(idx_row, c2, s2, count)
    tl.store(off_row + 2, count)
    count = _append(idx_row, c4, s4, count)
    tl.store(off_row + 3, count)
    count = _append(idx_row, c8, s8, count)
    tl.store(off_row + 4, count)
    count = _append(idx_row, j, n2, count)
    tl.store(off_row + 5, count)
    count = _append(idx_row, j, n4, count)
    tl.store(off_row + 6, count)
    count = _append(idx_row, j, n8, count)
    tl.store(off_row + 7, count)
    count = _append(idx_row, j, (partial & (lv > 0)) | (full & (lv == 1) & ragged), count)
    tl.store(off_row + 8, count)
    count = _append(idx_row, j, partial & (lv == 0), count)
    tl.store(off_row + 9, count)
    count = _append(idx_row, j, full & (lv == 0), count)
    tl.store(off_row + 10, count)
