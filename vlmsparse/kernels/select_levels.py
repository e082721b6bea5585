"""Per-row level assignment from block importance (Algorithm 2 of the PSA paper, and its binary special case).

For each query-block row: blocks the layout rules keep (``forced``) come first, then the free blocks by
descending importance. Walking that order, a statistic grows from 0 to 1, and a block gets the first level
whose threshold the statistic is still under:

- ``mode="energy"``: the statistic is the share of the row's importance already taken (cumulative mass).
- ``mode="quota"``: the statistic is the share of the row's visible blocks already taken (a fixed budget).

``rule="exclusive"`` compares the share *before* the block (the block that crosses a threshold is still
given the finer level, so the kept share is at least the threshold; XAttention's rule);
``rule="inclusive"`` compares the share *including* the block (SpargeAttn's CDF rule: keep blocks while the
CDF stays at or under the threshold). Forced blocks count first, so their mass is part of every threshold.

Raising any threshold can only move a block to a finer level: the plan's cost never falls. A threshold of 1 or
more takes every block the finer thresholds leave, whatever the rounding of the cumulative share (a block of zero
estimated share after the row's whole mass included): a last threshold of 1 never skips a visible block.

Among blocks with equal ordering keys (equal shares, e.g. many zero importances) the lower block index comes
first, so the result is fully determined. On CUDA one Triton launch does the whole assignment (:func:`cumulative_levels_triton`); the PyTorch code of
:func:`cumulative_levels` defines it.

The Triton kernel. In PyTorch the assignment is about fifteen launches over ``[B, H, nQB, nKB]`` (argsort,
gathers, cumsum, masked fills, scatter), a large part of what a planner costs per layer. Here one program takes one row
(batch, head, query block), padded to a power of two ``NKB``:

1. ``share`` = importance clamped at 0, zero where invisible, over the row's sum (IEEE division, as PyTorch).
2. The ordering key is ``share + 2 * forced`` (forced blocks first), invisible and padding entries last. Its
   float32 bits, which order like the values for keys >= +0, go into the high half of an int64 and
   ``NKB - 1 - index`` into the low half, so one descending ``tl.sort`` orders by key and, among equal keys,
   puts the lower block index first (the tie rule of the PyTorch version's stable argsort).
3. The statistic in sorted order: cumulative share (``tl.cumsum``; the exclusive form is the inclusive sum
   minus the block's own share, as in PyTorch) in energy mode, ``rank / n_visible`` (``rank + 1`` inclusive)
   in quota mode; a block gets the finest level whose threshold the statistic is under.
4. Levels are stored back at the original positions, 0 for blocks that are not free.

``forced`` / ``free`` are read through their strides, so broadcast masks (stride 0) are never expanded.
Results equal the PyTorch version exactly whenever the row sums and cumulative sums are exact in float32
(e.g. small-integer or dyadic importances); otherwise a block whose statistic lies within float rounding of
a threshold may land on the other side, as summation order differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .validation import triton_can_run

__all__ = [
    "MAX_KEY_BLOCKS",
    "MAX_LEVEL_PAIRS",
    "MODES",
    "RULES",
    "check_selection_args",
    "cumulative_levels_triton",
    "triton_supports_levels",
    "cumulative_levels",
    "lone_exact_",
    "lone_level2_exact_",
    "no_same_level_neighbour",
]

MODES = ("energy", "quota")
RULES = ("exclusive", "inclusive")

#: Most key blocks per row one program sorts (512k keys at block 128).
MAX_KEY_BLOCKS = 4096
#: Most (threshold, level) pairs the kernel takes.
MAX_LEVEL_PAIRS = 4


def check_selection_args(
    thresholds: Sequence[float], levels: Sequence[int], mode: str, rule: str, forced_level: int = 0
) -> None:
    """Raise ``ValueError`` unless ``mode``, ``rule``, the threshold/level pairs and ``forced_level`` are well
    formed."""
    if forced_level not in (0, 1) or isinstance(forced_level, bool):
        raise ValueError(f"forced_level must be 0 or 1, got {forced_level!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if len(thresholds) != len(levels):
        raise ValueError(f"need one threshold per level {tuple(levels)}, got {tuple(thresholds)}")


def _taking_all(thresholds: Sequence[float]) -> list[float]:
    """``thresholds`` as compared: ``inf`` for each at 1 or more (every statistic is under it)."""
    return [math.inf if float(t) >= 1.0 else float(t) for t in thresholds]


def triton_supports_levels(n_kb: int, n_pairs: int) -> bool:
    """Whether the kernel takes rows of ``n_kb`` key blocks and ``n_pairs`` threshold/level pairs."""
    return 1 <= n_kb <= MAX_KEY_BLOCKS and 1 <= n_pairs <= MAX_LEVEL_PAIRS


@triton.jit
def _hit(stat, threshold, INCLUSIVE: tl.constexpr):
    """Whether the statistic is under the threshold (``<=`` for the inclusive rule, ``<`` otherwise)."""
    if INCLUSIVE:
        return stat <= threshold
    else:
        return stat < threshold


@triton.jit
def _select_levels_kernel(
    Imp, Forced, Free, Out,
    s_ib, s_ih, s_iq, s_ik,
    s_fb, s_fh, s_fq, s_fk,
    s_gb, s_gh, s_gq, s_gk,
    n_heads, n_qb, n_kb,
    t0, t1, t2, t3,
    L0: tl.constexpr, L1: tl.constexpr, L2: tl.constexpr, L3: tl.constexpr, N_PAIRS: tl.constexpr,
    ENERGY: tl.constexpr, INCLUSIVE: tl.constexpr, NKB: tl.constexpr, FORCED_LEVEL: tl.constexpr,
    LONE2: tl.constexpr, LONE4: tl.constexpr, LONE8: tl.constexpr,
):
    row = tl.program_id(0)
    qb = row % n_qb
    bh = row // n_qb
    h = bh % n_heads
    b = bh // n_heads
    imp_row = Imp + b.to(tl.int64) * s_ib + h.to(tl.int64) * s_ih + qb.to(tl.int64) * s_iq
    forced_row = Forced + b.to(tl.int64) * s_fb + h.to(tl.int64) * s_fh + qb.to(tl.int64) * s_fq
    free_row = Free + b.to(tl.int64) * s_gb + h.to(tl.int64) * s_gh + qb.to(tl.int64) * s_gq
    out_row = Out + row.to(tl.int64) * n_kb

    j = tl.arange(0, NKB)
    in_row = j < n_kb
    forced = tl.load(forced_row + j.to(tl.int64) * s_fk, mask=in_row, other=0) != 0
    free_or_forced = tl.load(free_row + j.to(tl.int64) * s_gk, mask=in_row, other=0) != 0
    visible = forced | free_or_forced  # free blocks are told apart after the sort, by their keys
    imp = tl.load(imp_row + j.to(tl.int64) * s_ik, mask=in_row, other=0.0).to(tl.float32)
    imp = tl.where(visible, tl.maximum(imp, 0.0), 0.0)
    total = tl.maximum(tl.sum(imp, 0), 1e-30)
    share = tl.math.div_rn(imp, total)
    # adding +0.0 (free) or 2.0 (forced) turns a -0.0 share into +0.0: every visible key has bits >= 0
    key = share + 2.0 * forced.to(tl.float32)
    key_bits = tl.where(visible, key.to(tl.int32, bitcast=True), -1)
    packed = (key_bits.to(tl.int64) << 32) | (NKB - 1 - j).to(tl.int64)
    packed = tl.sort(packed, 0, descending=True)
    idx = NKB - 1 - (packed & (NKB - 1)).to(tl.int32)  # original position of each sorted entry
    key_bits_s = (packed >> 32).to(tl.int32)
    visible_s = key_bits_s >= 0
    key_s = key_bits_s.to(tl.float32, bitcast=True)
    forced_s = visible_s & (key_s >= 2.0)  # free keys are shares, at most 1
    free_s = visible_s & ~forced_s

    if ENERGY:
        # a free block's key is its share; a forced block's share is recomputed from its importance
        imp_s = tl.load(imp_row + idx.to(tl.int64) * s_ik, mask=forced_s, other=0.0).to(tl.float32)
        share_forced = tl.math.div_rn(tl.maximum(imp_s, 0.0), total)
        share_s = tl.where(forced_s, share_forced, tl.where(visible_s, key_s, 0.0))
        taken = tl.cumsum(share_s, 0)
        if INCLUSIVE:
            stat = taken
        else:
            stat = taken - share_s
    else:
        n_visible = tl.maximum(tl.sum(visible.to(tl.int32), 0), 1).to(tl.float32)
        if INCLUSIVE:
            rank = j.to(tl.float32) + 1.0
        else:
            rank = j.to(tl.float32)
        stat = tl.math.div_rn(rank, n_visible)

    # the finest level that fits wins: coarser pairs first, finer ones overwrite
    lv = tl.zeros([NKB], dtype=tl.int32)
    if N_PAIRS >= 4:
        lv = tl.where(_hit(stat, t3, INCLUSIVE), L3, lv)
    if N_PAIRS >= 3:
        lv = tl.where(_hit(stat, t2, INCLUSIVE), L2, lv)
    if N_PAIRS >= 2:
        lv = tl.where(_hit(stat, t1, INCLUSIVE), L1, lv)
    lv = tl.where(_hit(stat, t0, INCLUSIVE), L0, lv)
    lv = tl.where(free_s, lv, tl.where(forced_s, FORCED_LEVEL, 0))
    tl.store(out_row + idx, lv.to(tl.int8), mask=idx < n_kb)
    if LONE2 or LONE4 or LONE8:
        # a block of a listed pooled level with no neighbour of its level in its row becomes exact (every block
        # judged on the levels above, before any is changed): read the row back in block order
        tl.debug_barrier()  # the scattered stores above are visible to every thread of the program
        cur = tl.load(out_row + j, mask=in_row, other=0)
        left = tl.load(out_row + j - 1, mask=in_row & (j >= 1), other=0)
        right = tl.load(out_row + j + 1, mask=j + 1 < n_kb, other=0)
        listed = ((cur == 2) & LONE2) | ((cur == 4) & LONE4) | ((cur == 8) & LONE8)
        lone = listed & (left != cur) & (right != cur)
        tl.store(out_row + j, tl.full([NKB], 1, tl.int8), mask=in_row & lone)


def cumulative_levels_triton(
    importance: torch.Tensor,
    forced: torch.Tensor,
    free: torch.Tensor,
    thresholds: Sequence[float],
    levels: Sequence[int] = (1, 2, 4, 8),
    mode: str = "energy",
    rule: str = "exclusive",
    forced_level: int = 0,
    lone_level2_exact: bool = False,
    lone_exact: Sequence[int] = (),
) -> torch.Tensor:
    """``cumulative_levels`` in one Triton launch: int8 levels shaped like ``importance [B, H, nQB, nKB]``.

    ``forced`` / ``free`` are bool masks broadcastable to ``importance`` (read in place, never expanded);
    at most :data:`MAX_LEVEL_PAIRS` threshold/level pairs and :data:`MAX_KEY_BLOCKS` key blocks per row.
    Among equal ordering keys the lower block index comes first.
    """
    check_selection_args(thresholds, levels, mode, rule, forced_level)
    lone = _lone_levels(lone_exact, lone_level2_exact)
    return _levels_triton(importance, forced, free, thresholds, levels, mode, rule, forced_level, lone)


def _lone_levels(lone_exact: Sequence[int], lone_level2_exact: bool) -> frozenset[int]:
    """The pooled levels whose lone blocks become exact (``lone_level2_exact`` adds level 2)."""
    try:
        lone = frozenset(int(x) for x in lone_exact if not isinstance(x, bool) and int(x) == x)
    except (TypeError, ValueError):
        lone = None
    if lone is None or len(lone) != len(tuple(lone_exact)) or not lone <= {2, 4, 8}:
        raise ValueError(f"lone_exact must list pooled levels among 2, 4 and 8, got {lone_exact!r}")
    return lone | {2} if lone_level2_exact else lone


def _levels_triton(importance, forced, free, thresholds, levels, mode, rule, forced_level=0,
                   lone: frozenset[int] = frozenset()) -> torch.Tensor:
    """:func:`cumulative_levels_triton` after its mode / rule / pairs check (done once by the caller)."""
    if not isinstance(importance, torch.Tensor) or importance.dim() != 4:
        shape = tuple(importance.shape) if isinstance(importance, torch.Tensor) else type(importance).__name__
        raise ValueError(f"importance must be a 4-D tensor [B, H, nQB, nKB], got {shape}")
    if not importance.dtype.is_floating_point:
        raise ValueError(f"importance must be a floating-point tensor, got {importance.dtype}")
    if not 1 <= len(levels) <= MAX_LEVEL_PAIRS:
        raise ValueError(
            f"the Triton kernel takes 1 to {MAX_LEVEL_PAIRS} threshold/level pairs, got {len(levels)}"
        )
    for lv in levels:
        if isinstance(lv, bool) or int(lv) != lv or not 0 <= int(lv) <= 127:
            raise ValueError(f"levels must be integers in [0, 127] (stored as int8), got {tuple(levels)}")
    n_kb = importance.shape[-1]
    if n_kb > MAX_KEY_BLOCKS:
        raise ValueError(
            f"importance has {n_kb} key blocks per row; the Triton kernel sorts at most {MAX_KEY_BLOCKS} "
            "(use the PyTorch path, use_triton=False, or larger key blocks)"
        )
    masks = {}
    for name, m in (("forced", forced), ("free", free)):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {getattr(m, 'dtype', type(m).__name__)}")
        if m.device != importance.device:
            raise ValueError(f"{name} is on {m.device} but importance is on {importance.device}")
        try:
            masks[name] = m.expand(importance.shape)  # a view: broadcast dimensions get stride 0
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(m.shape)} does not broadcast to importance {tuple(importance.shape)}"
            ) from None
    if not triton_can_run(importance.device):
        raise ValueError(f"Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1), got {importance.device}")

    b, h, n_qb, _ = importance.shape
    out = torch.empty(importance.shape, dtype=torch.int8, device=importance.device)  # every entry is written
    rows = b * h * n_qb
    if rows == 0 or n_kb == 0:
        return out
    fm, gm = masks["forced"], masks["free"]
    nkb_pad = max(16, triton.next_power_of_2(n_kb))
    pairs = [(t, int(lv)) for t, lv in zip(_taking_all(thresholds), levels)]
    pairs += [(0.0, 0)] * (MAX_LEVEL_PAIRS - len(pairs))
    (t0, l0), (t1, l1), (t2, l2), (t3, l3) = pairs
    _select_levels_kernel[(rows,)](
        importance, fm, gm, out,
        *importance.stride(), *fm.stride(), *gm.stride(),
        h, n_qb, n_kb,
        t0, t1, t2, t3,
        L0=l0, L1=l1, L2=l2, L3=l3, N_PAIRS=len(levels),
        ENERGY=mode == "energy", INCLUSIVE=rule == "inclusive", NKB=nkb_pad, FORCED_LEVEL=int(forced_level),
        LONE2=2 in lone, LONE4=4 in lone, LONE8=8 in lone,
        num_warps=min(8, max(1, nkb_pad // 256)),
    )
    return out


def cumulative_levels(
    importance: torch.Tensor, forced: torch.Tensor, free: torch.Tensor, thresholds: Sequence[float], *,
    levels: Sequence[int] = (1, 2, 4, 8), mode: str = "energy", rule: str = "exclusive", forced_level: int = 0,
    lone_level2_exact: bool = False, lone_exact: Sequence[int] = (), use_triton: bool | None = None,
) -> torch.Tensor:
    """Levels (int8, same shape as ``importance [B, H, nQB, nKB]``) for the free blocks; 0 elsewhere.

    ``forced`` / ``free`` are bool masks broadcastable to ``importance``; blocks in neither are invisible.
    ``thresholds[j]`` bounds ``levels[j]`` (non-decreasing); beyond the last threshold a block is skipped.
    ``forced_level``: the level written for forced blocks (0: left to the caller's layout rules; 1: the
    layout rules applied here, so the result is a finished plan). ``lone_level2_exact``: then every level-2
    block with no level-2 neighbour in its row becomes 1 (:func:`lone_level2_exact_`); ``lone_exact`` (levels among
    2, 4, 8): the same for the blocks of those levels (each judged on the levels before any is changed).
    ``use_triton``: ``None`` takes the one-launch Triton kernel for CUDA tensors it supports (at most
    4096 key blocks and 4 threshold/level pairs) and this PyTorch code elsewhere, CPU included; ``True``
    forces the kernel (a ``ValueError`` if it cannot take the input), ``False`` forces PyTorch.
    """
    check_selection_args(thresholds, levels, mode, rule, forced_level)
    lone = _lone_levels(lone_exact, lone_level2_exact)
    if use_triton is None:
        use_triton = (
            importance.device.type == "cuda"
            and triton_can_run(importance.device)
            and triton_supports_levels(importance.shape[-1], len(levels))
        )
    if use_triton:
        return _levels_triton(importance, forced, free, thresholds, levels, mode, rule, forced_level, lone)
    forced = forced.expand_as(importance)
    free = free.expand_as(importance) & ~forced
    visible = forced | free
    imp = importance.float().clamp(min=0).masked_fill(~visible, 0.0)
    share = imp / imp.sum(-1, keepdim=True).clamp(min=1e-30)
    key = (share + 2.0 * forced).masked_fill_(~visible, -1.0)  # forced first, then free by share
    order = torch.argsort(key, dim=-1, descending=True, stable=True)  # ties: lower block index first
    if mode == "energy":
        taken = share.gather(-1, order).cumsum(-1)
        stat = taken - share.gather(-1, order) if rule == "exclusive" else taken
    else:
        n_visible = visible.sum(-1, keepdim=True).clamp(min=1).float()
        rank = torch.arange(importance.shape[-1], device=importance.device, dtype=torch.float32)
        stat = (rank + (1.0 if rule == "inclusive" else 0.0)) / n_visible
    sorted_levels = torch.zeros(stat.shape, dtype=torch.int8, device=stat.device)
    for level, threshold in reversed(list(zip(levels, _taking_all(thresholds)))):  # the finest level that fits wins
        hit = stat < threshold if rule == "exclusive" else stat <= threshold
        sorted_levels.masked_fill_(hit, level)
    out = torch.zeros_like(sorted_levels).scatter_(-1, order, sorted_levels)
    out.masked_fill_(~free, 0)
    if forced_level:
        out.masked_fill_(forced, forced_level)
    return lone_exact_(out, lone) if lone else out


def no_same_level_neighbour(levels: torch.Tensor) -> torch.Tensor:
    """bool, shaped like ``levels [..., nKB]``: True where neither neighbour in the row (none past its ends) has
    the block's level, so the kernel reads a pooled block there as a narrow tile of its own."""
    pad = torch.zeros_like(levels[..., :1])
    left = torch.cat([pad, levels[..., :-1]], -1)
    right = torch.cat([levels[..., 1:], pad], -1)
    return (left != levels) & (right != levels)


def lone_level2_exact_(levels: torch.Tensor) -> torch.Tensor:
    """``levels [..., nKB]`` with every level-2 block that has no level-2 neighbour in its row set to 1."""
    return lone_exact_(levels, (2,))


def lone_exact_(levels: torch.Tensor, lone: Sequence[int]) -> torch.Tensor:
    """``levels [..., nKB]`` with every block of a level in ``lone`` that has no neighbour of its level in its row
    set to 1 (in place; every block judged on the levels as given)."""
    listed = torch.zeros_like(levels, dtype=torch.bool)
    for level in lone:
        listed |= levels == level
    return levels.masked_fill_(listed & no_same_level_neighbour(levels), 1)
