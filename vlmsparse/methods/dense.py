"""``dense``: every visible block at level 1 (the baseline; sparsity 0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import BlockLayout, Method, MethodConfig


@dataclass
class DenseConfig(MethodConfig):
    """Dense attention through the same kernel. One plan per key/value head by default (it is the same plan)."""

    plan_heads: str = "kv"


class Dense(Method):
    """Keeps every block of the causal grid exactly."""

    name = "dense"
    config_class = DenseConfig

    def plans_pooled(self) -> bool:
        return False  # binary plans (levels 0 / 1)

    def plans_skip(self) -> bool:
        return False  # every visible block exact

    def select(self, q: torch.Tensor, k: torch.Tensor, layout: BlockLayout, plan_heads: int) -> torch.Tensor:
        b = q.shape[0]
        return torch.ones(b, plan_heads, *layout.classes.shape, dtype=torch.int8, device=q.device)
