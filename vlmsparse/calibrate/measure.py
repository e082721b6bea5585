"""What a plan costs one layer, per plan head: block cost, attention error against dense, recall.

For one layer's prefill ``q, k, v`` and a list of planners, the dense output and the dense softmax mass are
computed once, then each planner's plan is run and compared. Everything is kept as sums per plan head, so
layers, heads and samples aggregate exactly:

- ``cost`` / ``blocks``: the plan's summed block cost and counted causal blocks (DESIGN.md's sparsity);
- ``err``: squared L2 norm of ``O_plan - O_dense`` over the head's queries (its query heads for ``kv`` plans);
- ``norm``: squared L2 norm of ``O_dense`` over the same;
- ``kept`` / ``rows``: dense softmax mass on kept blocks (any level > 0), summed over query rows, and the rows.

On CUDA the plan runs in the Triton kernel and the dense output is the same kernel with every block kept (both
carry the same rounding); on CPU the plan runs in ``pyramid_attention_blockwise`` (float32, the path a patched
model takes on CPU; its work follows the plan's density) and the dense output is float32 PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from vlmsparse.bench.fidelity import dense_attention_stats
from vlmsparse.methods import Plan, get_method

__all__ = ["Planner", "LayerFigures", "measure_layer"]

_GRAIN = 16  # the dense mass map's tile (dense_attention_stats)


class Planner(Protocol):
    def plan(self, q: torch.Tensor, k: torch.Tensor, visual: torch.Tensor | None = None) -> Plan: ...


@dataclass
class LayerFigures:
    """One layer of one sample: ``[planner, plan head]`` sums (float64 numpy), ``blocks``/``norm``/``rows`` ``[head]``."""

    cost: np.ndarray
    blocks: np.ndarray
    err: np.ndarray
    norm: np.ndarray
    kept: np.ndarray
    rows: np.ndarray


def _sparse_output(q, k, v, plan: Plan, scale: float) -> torch.Tensor:
    if q.is_cuda:
        return plan.run(q, k, v, sm_scale=scale)
    kwargs = dict(sm_scale=scale, **plan.kernel_kwargs())
    from vlmsparse.kernels.blockwise import pyramid_attention_blockwise

    return pyramid_attention_blockwise(q, k, v, plan.levels, compute_dtype=torch.float32, **kwargs)


def _per_head(x: torch.Tensor, plan_heads: int) -> torch.Tensor:
    """``[Hq]`` -> ``[plan_heads]`` (sum over each key/value head's query group)."""
    return x.reshape(plan_heads, -1).sum(1) if x.shape[0] != plan_heads else x


def measure_layer(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    visual: torch.Tensor | None,
    planners: Sequence[Planner],
    scaling: float | None = None,
    *,
    by_head: bool = True,
) -> LayerFigures:
    """Plan ``q [1, Hq, L, D]``, ``k, v [1, Hkv, L, D]`` with every planner and measure each against dense.

    ``by_head``: figures per plan head (all planners must then plan at one head granularity, ``plan_heads``);
    otherwise summed over heads (one column).
    """
    b, hq, lq, d = q.shape
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(d)
    with torch.no_grad():
        q_std = q if abs(scale * math.sqrt(d) - 1.0) < 1e-6 else (q.float() * (scale * math.sqrt(d))).to(q.dtype)
        dense_ref, mass = dense_attention_stats(q_std, k, v)  # float32, scale 1/sqrt(D)
        if q.is_cuda:
            dense_plan = get_method("dense", block_m=128, block_n=128).plan(q, k, visual)
            dense = _sparse_output(q, k, v, dense_plan, scale).double()
            del dense_ref
        else:
            dense = dense_ref.double()
        norm_q = dense.pow(2).sum((0, 2, 3))  # [Hq]
        rows_q = torch.full((hq,), float(b * lq), dtype=torch.float64)
        costs, errs, kepts, blocks, plan_heads = [], [], [], None, None
        for planner in planners:
            plan = planner.plan(q, k, visual)
            hm = plan.levels.shape[1]
            if plan_heads is None or not by_head:
                plan_heads = hm
            elif hm != plan_heads:
                raise ValueError(f"planners of one measurement must share plan heads, got {plan_heads} and {hm}")
            s = plan.sparsity()
            costs.append(s.cost.sum(0).cpu() if by_head else s.cost.sum().reshape(1).cpu())
            blocks = s.blocks.sum(0).cpu() if by_head else s.blocks.sum().reshape(1).cpu()
            out = _sparse_output(q, k, v, plan, scale)
            hm = hm if by_head else 1
            errs.append(_per_head((out.double() - dense).pow(2).sum((0, 2, 3)).cpu(), hm))
            kept = (plan.levels > 0).float()
            if kept.shape[1] != hq:
                kept = kept.repeat_interleave(hq // kept.shape[1], dim=1)
            kept = kept.repeat_interleave(plan.block_m // _GRAIN, 2).repeat_interleave(plan.block_n // _GRAIN, 3)
            kept = kept[:, :, : mass.shape[2], : mass.shape[3]]
            kepts.append(_per_head((kept * mass).sum((0, 2, 3)).double().cpu(), hm))
            del out, kept
        assert plan_heads is not None and blocks is not None
        if not by_head:
            plan_heads = 1
    return LayerFigures(
        cost=torch.stack(costs).numpy(),
        blocks=blocks.numpy(),
        err=torch.stack(errs).numpy(),
        norm=_per_head(norm_q.cpu(), plan_heads).numpy(),
        kept=torch.stack(kepts).numpy(),
        rows=_per_head(rows_q, plan_heads).numpy(),
    )
