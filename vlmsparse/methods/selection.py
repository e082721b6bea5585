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

Raising any threshold can only move a block to a finer level: the plan's cost never falls.

Among blocks with equal ordering keys (equal shares, e.g. many zero importances) the lower block index comes
first, so the result is fully determined. On CUDA one Triton launch does the whole assignment
(:func:`vlmsparse.kernels.select_levels.cumulative_levels_triton`); the PyTorch code below defines it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlmsparse.kernels.select_levels import (
    MODES,
    RULES,
    check_selection_args,
    cumulative_levels_triton,
    triton_supports_levels,
)
from vlmsparse.kernels.validation import triton_can_run

__all__ = ["cumulative_levels", "MODES", "RULES"]


def cumulative_levels(
    importance: torch.Tensor,
    forced: torch.Tensor,
    free: torch.Tensor,
    thresholds: Sequence[float],
    *,
    levels: Sequence[int] = (1, 2, 4, 8),
    mode: str = "energy",
    rule: str = "exclusive",
    use_triton: bool | None = None,
) -> torch.Tensor:
    """Levels (int8, same shape as ``importance [B, H, nQB, nKB]``) for the free blocks; 0 elsewhere.

    ``forced`` / ``free`` are bool masks broadcastable to ``importance``; blocks in neither are invisible.
    ``thresholds[j]`` bounds ``levels[j]`` (non-decreasing); beyond the last threshold a block is skipped.
    ``use_triton``: ``None`` takes the one-launch Triton kernel for CUDA tensors it supports (at most
    4096 key blocks and 4 threshold/level pairs) and this PyTorch code elsewhere, CPU included; ``True``
    forces the kernel (a ``ValueError`` if it cannot take the input), ``False`` forces PyTorch.
    """
    check_selection_args(thresholds, levels, mode, rule)
    if use_triton is None:
        use_triton = (
            importance.device.type == "cuda"
            and triton_can_run(importance.device)
            and triton_supports_levels(importance.shape[-1], len(levels))
        )
    if use_triton:
        return cumulative_levels_triton(importance, forced, free, thresholds, levels, mode, rule)
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
    for level, threshold in reversed(list(zip(levels, thresholds))):  # the finest level that fits wins
        hit = stat < threshold if rule == "exclusive" else stat <= threshold
        sorted_levels.masked_fill_(hit, level)
    out = torch.zeros_like(sorted_levels).scatter_(-1, order, sorted_levels)
    return out.masked_fill_(~free, 0)
