"""``xattention``: XAttention's block selection (binary plan, levels 0 / 1).

Per query-block row: block importance from the strided antidiagonal estimate (see
:func:`vlmsparse.methods.scoring.antidiagonal_block_scores`), then the smallest set of blocks whose share of the
row's estimated attention mass reaches ``threshold`` (tau): blocks the layout rules keep count first, the
rest join in descending order while the mass taken *before* them is under tau (so the crossing block is
kept). Everything else is skipped.

Where the defaults come from:

- ``stride = 16`` and ``threshold = 0.9`` for video understanding: the public XAttention repository
  (``mit-han-lab/x-attention``) runs its Video-MME evaluation of Qwen2-VL-7B into the work directory
  ``outputs_xattn_16_0.9`` (``scripts/run_vllms.sh``), i.e. stride 16, tau 0.9. The paper text itself was
  not checked here.
- Block size 128 and the selection rule (first key block and diagonal always kept and counted first; keep a
  block while the cumulative mass without it is under ``threshold * row total``): its ``find_blocks_chunked``.
- Tile logits scaled by ``1 / (sqrt(D) * stride)``, tile-level causal mask, softmax per tile row, sums per
  block: its ``xattn_estimate``.

Plans are per query head by default (``plan_heads="kv"`` averages the group's shares before selection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import BlockLayout, Method, MethodConfig
from .scoring import DEFAULT_MAX_ELEMENTS, antidiagonal_block_scores, group_heads
from .selection import cumulative_levels


@dataclass
class XAttentionConfig(MethodConfig):
    """Settings of the XAttention planner.

    Attributes:
        threshold: tau, the share of each row's estimated attention mass to keep, in [0, 1].
        stride: antidiagonal stride (must divide ``block_m`` and ``block_n``).
        max_elements: memory bound of the antidiagonal estimate.
    """

    threshold: float = 0.9
    stride: int = 16
    max_elements: int = DEFAULT_MAX_ELEMENTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be a number in [0, 1], got {self.threshold!r}")
        self.threshold = float(self.threshold)
        if not isinstance(self.stride, int) or self.stride < 1 or self.block_m % self.stride or self.block_n % self.stride:
            raise ValueError(
                f"stride must be a positive integer dividing block_m ({self.block_m}) and block_n ({self.block_n}), "
                f"got {self.stride!r}"
            )
        if not isinstance(self.max_elements, int) or self.max_elements < 1:
            raise ValueError(f"max_elements must be a positive integer, got {self.max_elements!r}")


class XAttention(Method):
    """Antidiagonal scoring with a per-row cumulative mass threshold; binary plan."""

    name = "xattention"
    config_class = XAttentionConfig
    select_applies_layout_rules = True
    presets = {"videomme": {}}

    def plans_pooled(self) -> bool:
        return False  # binary plans (levels 0 / 1)

    def plans_skip(self) -> bool:
        return self.config.threshold < 1.0  # a threshold of 1 takes every visible block (cumulative_levels)

    def select(self, q: torch.Tensor, k: torch.Tensor, layout: BlockLayout, plan_heads: int) -> torch.Tensor:
        cfg = self.config
        imp = antidiagonal_block_scores(
            q, k, stride=cfg.stride, block_m=cfg.block_m, block_n=cfg.block_n, causal=cfg.causal,
            max_elements=cfg.max_elements,
        )
        if plan_heads != q.shape[1]:
            imp = group_heads(imp / imp.sum(-1, keepdim=True).clamp(min=1e-30), k.shape[1], "mean")
        return cumulative_levels(imp, layout.forced[:, None], layout.free[:, None], (cfg.threshold,), levels=(1,),
                                 forced_level=1)
