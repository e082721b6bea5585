"""Compiling a plan: per (batch, plan head, query block), the kept key blocks grouped by what the kernel does.

Categories, in the order the kernel visits them: exact blocks wholly visible (1), pooled at 2 (2), 4 (3) and 8
(4), then blocks that need token-level masks (5): those meeting the causal diagonal (computed exactly whatever
their level) and an exact last block that ends before a full block. Then the visible blocks the plan skips,
which only tail aggregation reads: those meeting the diagonal (6) and those wholly visible (7). Invisible
blocks are dropped. One Triton launch compiles the whole plan; the plain-PyTorch version defines the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .blocks import FULL, PARTIAL, block_classes
from .validation import triton_can_run

N_CATEGORIES = 7
KEPT_CATEGORIES = 5  # categories 1-5 are visited by the attention loops; 6-7 (skipped) by tail aggregation


@dataclass
class CompiledPlan:
    """A plan as the kernel reads it.

    ``block_idx`` int32 ``[B * Hm * nQB, nKB]``: row ``r`` lists its visible key blocks by category, in increasing
    order within a category (entries past the last visible one are unspecified); ``cat_offsets`` int32
    ``[B * Hm * nQB, 8]``: category ``c`` occupies ``block_idx[r, off[c - 1]:off[c]]``, ``off[0] = 0``.
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
    )
    return CompiledPlan(block_idx, offsets, hm)


def compile_plan_torch(
    levels: torch.Tensor, q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True
) -> CompiledPlan:
    """:func:`compile_plan` in plain PyTorch (the definition; used for CPU tensors)."""
    b, hm, n_qb, n_kb = levels.shape
    cls = block_classes(q_len, k_len, block_m, block_n, causal, levels.device)
    lv = levels.to(torch.int32)
    full = cls == FULL
    masked = (cls == PARTIAL) & (lv > 0)
    if k_len % block_n:
        last = torch.zeros_like(full)
        last[:, -1] = True
        masked = masked | (full & last & (lv == 1))
        full = full & ~(last & (lv == 1))
    cat = torch.zeros_like(lv)
    for c, level in ((1, 1), (2, 2), (3, 4), (4, 8)):
        cat = torch.where(full & (lv == level), c, cat)
    cat = torch.where(masked, 5, cat)
    visible = cls != 0
    cat = torch.where((cls == PARTIAL) & (lv == 0), 6, cat)
    cat = torch.where(visible & (cls == FULL) & (lv == 0), 7, cat)
    col = torch.arange(n_kb, device=levels.device, dtype=torch.int32)
    key = torch.where(cat > 0, cat * n_kb + col, (N_CATEGORIES + 1) * n_kb + col)
    order = torch.argsort(key, dim=-1).to(torch.int32)
    counts = torch.stack([(cat == c).sum(-1) for c in range(1, N_CATEGORIES + 1)], -1)
    offsets = torch.nn.functional.pad(counts.cumsum(-1), (1, 0)).to(torch.int32)
    return CompiledPlan(order.reshape(-1, n_kb).contiguous(), offsets.reshape(-1, N_CATEGORIES + 1).contiguous(), hm)


@triton.jit
def _append(idx_row, j, keep, count):
    """Write the key blocks ``j`` where ``keep`` after the ``count`` already listed; return the new count."""
    k = keep.to(tl.int32)
    tl.store(idx_row + count + tl.cumsum(k, 0) - 1, j, mask=k != 0)
    return count + tl.sum(k, 0)


@triton.jit
def _plan_lists_kernel(Levels, BlockIdx, CatOff, n_qb, n_kb, q_len, k_len,
                       CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NKB: tl.constexpr):
    row = tl.program_id(0)
    qblk = row % n_qb
    j = tl.arange(0, NKB)
    in_row = j < n_kb
    lv = tl.load(Levels + row.to(tl.int64) * n_kb + j, mask=in_row, other=0).to(tl.int32)
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
        partial = j < 0
    ragged_last = (j == n_kb - 1) & (k_len % BLOCK_N != 0)
    idx_row = BlockIdx + row.to(tl.int64) * n_kb
    off_row = CatOff + row * 8
    count = tl.sum(j * 0, 0)
    tl.store(off_row, count)
    count = _append(idx_row, j, full & (lv == 1) & ~ragged_last, count)
    tl.store(off_row + 1, count)
    count = _append(idx_row, j, full & (lv == 2), count)
    tl.store(off_row + 2, count)
    count = _append(idx_row, j, full & (lv == 4), count)
    tl.store(off_row + 3, count)
    count = _append(idx_row, j, full & (lv == 8), count)
    tl.store(off_row + 4, count)
    count = _append(idx_row, j, (partial & (lv > 0)) | (full & (lv == 1) & ragged_last), count)
    tl.store(off_row + 5, count)
    count = _append(idx_row, j, partial & (lv == 0), count)
    tl.store(off_row + 6, count)
    count = _append(idx_row, j, full & (lv == 0), count)
    tl.store(off_row + 7, count)
