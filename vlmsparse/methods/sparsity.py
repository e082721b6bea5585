"""Sparsity accounting: what a plan costs over the causal block grid.

A block at level ``p`` costs ``1 / p``, a skipped block 0, an exact block 1; blocks above the causal
diagonal (``INVISIBLE``) are not counted. The cost is the kernel's *effective* one: a pooled level on a block
that meets the diagonal (``PARTIAL``) is computed exactly by the kernel and so costs 1.
``density = mean cost`` and ``sparsity = 1 - density``.

Figures are kept as sums and counts (``cost`` and ``blocks``, float64, per batch row and plan head) so that
aggregating over layers, heads and samples stays exact: add the sums, add the counts, divide once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmsparse.kernels.blocks import INVISIBLE, PARTIAL, block_classes


@dataclass
class PlanSparsity:
    """Summed block cost and number of counted causal blocks, per ``[batch, plan head]``.

    ``visual_cost`` / ``visual_blocks`` restrict both to the visual x visual region: blocks whose query block
    holds no text query and whose key block holds no text key.
    """

    cost: torch.Tensor  # float64 [B, Hm]
    blocks: torch.Tensor  # float64 [B, Hm]
    visual_cost: torch.Tensor  # float64 [B, Hm]
    visual_blocks: torch.Tensor  # float64 [B, Hm]

    @property
    def overall(self) -> float:
        """``1 - total cost / total counted blocks`` over every batch row and head."""
        n = float(self.blocks.sum())
        return 1.0 - float(self.cost.sum()) / n if n > 0 else 0.0

    @property
    def visual(self) -> float | None:
        """Sparsity of the visual x visual region alone; ``None`` when that region is empty."""
        n = float(self.visual_blocks.sum())
        return 1.0 - float(self.visual_cost.sum()) / n if n > 0 else None

    @property
    def per_head(self) -> torch.Tensor:
        """Sparsity per ``[batch, plan head]``."""
        return 1.0 - self.cost / self.blocks.clamp(min=1)

    @property
    def per_sample(self) -> torch.Tensor:
        """Sparsity per batch row (all heads together), ``[B]``."""
        return 1.0 - self.cost.sum(1) / self.blocks.sum(1).clamp(min=1)

    def __add__(self, other: "PlanSparsity") -> "PlanSparsity":
        """Pool two figures of the same ``[B, Hm]`` shape (e.g. two layers)."""
        return PlanSparsity(
            self.cost + other.cost,
            self.blocks + other.blocks,
            self.visual_cost + other.visual_cost,
            self.visual_blocks + other.visual_blocks,
        )


def effective_levels(levels: torch.Tensor, q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True) -> torch.Tensor:
    """Levels as the kernel computes them: invisible blocks 0, any kept level on a ``PARTIAL`` block 1."""
    cls = block_classes(q_len, k_len, block_m, block_n, causal, levels.device)
    lv = levels.to(torch.int64)
    lv = torch.where((cls == PARTIAL) & (lv > 0), torch.ones_like(lv), lv)
    return torch.where(cls == INVISIBLE, torch.zeros_like(lv), lv)


def block_cost(levels: torch.Tensor, q_len: int, k_len: int, block_m: int, block_n: int, causal: bool = True) -> torch.Tensor:
    """Float64 cost of every block of ``levels [..., nQB, nKB]``: ``1 / p`` for level ``p``, 0 when skipped or invisible."""
    eff = effective_levels(levels, q_len, k_len, block_m, block_n, causal)
    return torch.where(eff > 0, 1.0 / eff.clamp(min=1).to(torch.float64), torch.zeros((), dtype=torch.float64, device=eff.device))


def plan_sparsity(
    levels: torch.Tensor,
    q_len: int,
    k_len: int,
    block_m: int,
    block_n: int,
    causal: bool = True,
    query_block_visual: torch.Tensor | None = None,
    key_block_visual: torch.Tensor | None = None,
) -> PlanSparsity:
    """Sparsity figures of ``levels [B, Hm, nQB, nKB]``.

    ``query_block_visual [B, nQB]`` / ``key_block_visual [B, nKB]`` (bool) say which query blocks hold no text
    query and which key blocks hold no text key; ``None`` means all visual.
    """
    if levels.dim() != 4:
        raise ValueError(f"levels must be 4-D [B, Hm, nQB, nKB], got shape {tuple(levels.shape)}")
    b, hm, n_qb, n_kb = levels.shape
    dev = levels.device
    counted = block_classes(q_len, k_len, block_m, block_n, causal, dev) != INVISIBLE  # [nQB, nKB]
    if counted.shape != (n_qb, n_kb):
        raise ValueError(
            f"levels grid {(n_qb, n_kb)} does not match Lq={q_len}, Lk={k_len}, block_m={block_m}, block_n={block_n}"
        )
    cost = block_cost(levels, q_len, k_len, block_m, block_n, causal)
    qv = torch.ones(b, n_qb, dtype=torch.bool, device=dev) if query_block_visual is None else query_block_visual.to(dev)
    kv = torch.ones(b, n_kb, dtype=torch.bool, device=dev) if key_block_visual is None else key_block_visual.to(dev)
    region = (qv[:, :, None] & kv[:, None, :] & counted).to(torch.float64)  # [B, nQB, nKB]
    n_counted = counted.sum().to(torch.float64)
    return PlanSparsity(
        cost=cost.sum((-2, -1)),
        blocks=n_counted.expand(b, hm).clone(),
        visual_cost=(cost * region[:, None]).sum((-2, -1)),
        visual_blocks=region.sum((-2, -1))[:, None].expand(b, hm).clone(),
    )
