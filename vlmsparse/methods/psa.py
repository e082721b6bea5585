"""``psa``: Pyramid Sparse Attention planner (multi-level plans: levels 1 / 2 / 4 / 8 / 0).

What it does, per query-block row (Algorithm 2 of the PSA paper):

1. block importance, from the strided antidiagonal estimate (``importance="antidiagonal"``, stride 8 by
   default) or from mean-pooled ``q . k`` (``importance="pooled"``, cheaper, coarser);
2. sort the row's blocks by importance (blocks the layout rules keep come first), normalise to shares;
3. walking that order, level 1 while the cumulative share is under ``thresholds[0]``, level 2 under
   ``thresholds[1]``, 4 under ``thresholds[2]``, 8 under ``thresholds[3]``, skipped beyond;
4. optionally (``sim_guard=True``) a key block may be pooled at level p only where its keys are alike: the
   mean cosine similarity between the first and the last key of each group of p keys must exceed
   ``sim_thresholds`` (for p = 2, 4, 8); otherwise the block falls back to the coarsest level that passes, or
   to level 1;
5. ``tail=True`` asks the kernel to fold every skipped key of a row into one mean key (tail aggregation); with a
   last threshold of 1 nothing is skipped, and the plans run without it (:meth:`Method.plans_skip`);
6. ``lone_level2_exact=True`` (default): a level-2 block with no level-2 neighbour in its row is kept exact
   instead. The kernel reads runs of level-p blocks as one tile, so a block in a run costs about its share, but a
   lone level-2 block pays a whole tile step for 64 pooled keys: about 1.23 of an exact block on an H200
   (levels 4 and 8 alone: 0.76 and 0.49, below an exact block, so they stay). Exact is then both cheaper and
   exact. In a same-run A/B on an H200 (16k and 32k tokens, three input families; ``notes/ab/lone_level2_ab.py``,
   ``results/lone_level2_ab.csv``) it lowered PSA's best error within every time budget from 1.1x to 2x on
   nearly every input. ``False`` keeps Algorithm 2's levels as they are (the presets below do): with the step
   a block's cost is no longer monotone in the thresholds (raising ``thresholds[1]`` can give a lone level-2
   block a level-2 neighbour), which calibration's cost curves tolerate.

Where the defaults come from:

- ``thresholds = (0.55, 0.55, 0.55, 1.0)``, ``lone_pooled = "exact"``, ``stride = 16``, antidiagonal importance,
  energy (cumulative mass) mode (also preset ``"exact-l8"``): exact blocks for 55% of a row's estimated mass and
  every other visible block at level 8, so every key is seen at least through its level-8 mean and nothing is
  skipped; a level-8 block with no level-8 neighbour is made exact (alone it costs about half an exact block, in
  a run about its share: ``bench kernel``). The kernel reads a run of eight level-8 blocks as one tile step, so a
  row's whole background costs about an eighth of its exact cost, and the lone blocks made exact fill the holes
  between exact ones, where the mass the estimate misses sits. Chosen on the pareto benchmark's synthetic families
  (an H200, ``bench pareto``, 16k ``peaked`` seeds 2, 4, 5 and 6 for the shape: ``notes/ab/shape_sweep.py``), then
  checked on seeds 6 and 7 at 8k, 16k and 32k on ``diffuse``, ``medium`` and ``peaked`` inputs: against the
  previous default (below) faster on every family and length (32k: 1.41-1.45x / 1.73x / 1.94x of dense against
  1.29-1.34x / 1.53-1.54x / 1.73x) with 1.5-2.3x lower error; its ``psa-exact-l8`` line, with the lone step in the
  level-assignment launch, ahead of XAttention at 90 of 90 time budgets from 1.1x to 2x (16k seeds 6 to 9, 32k
  seeds 8 and 9; README "Speed"). ``tail`` has nothing to fold in such a plan.
- Preset ``"levels-4-8"`` (the default until 2026-12-03): ``thresholds = (0.6, 0.6, 0.8, 0.93)``, stride 16,
  ``lone_pooled="keep"``: exact blocks up to 60% of a row's estimated mass, the next 20% at level 4, the 13% after
  it at level 8, the rest skipped; no level 2 (a level-2 block costs about 0.59 of an exact block in a run and 1.23
  alone, for half its keys). Against the public code's setting below, on the pareto benchmark's synthetic
  families at 8k to 32k tokens (``notes/ab/defaults_ab.py``, ``results/defaults_ab.csv``) at 16k and 32k it was
  faster on ``diffuse``, ``medium`` and ``mixed`` inputs and about as fast on ``peaked`` ones, more accurate on
  ``diffuse`` and ``medium``, less on ``peaked`` and ``mixed``.
- Preset ``"public-thresholds"`` (the default before ``"levels-4-8"``): ``thresholds = (0.7, 0.8, 0.9, 0.9)``,
  ``stride = 8``, the Qwen2.5-VL example of the public PSA code (``qwenvl2.5-example/README.md`` of
  ``ziplab/Pyramid-Sparse-Attention``: ``mask_mode="energybound"``, ``mask_ratios`` 1: (0, 0.7), 2: (0.7, 0.8),
  4: (0.8, 0.9), 8: (0.9, 0.9), 0: (0.9, 1.0), ``xattn_stride=8``), with this package's lone level-2 step.
  With equal third and fourth thresholds level 8 is never used in that setting. ``"public-qwen2.5-vl"`` is the
  same without the lone level-2 step (``lone_level2_exact=False``): the public code's levels.
- ``sim_thresholds = (0.75, 0.7, 0.7)`` and the first-vs-last-key-of-each-group cosine test: the same code's
  ``calc_k_similarity``. There the guard is always on; here it is off by default (``sim_guard=False``) so that
  the default plan is Algorithm 2 alone; turn it on to match that code.
- The antidiagonal estimate (softmax of tile logits scaled by ``1 / (sqrt(D) * stride)`` under a causal tile
  mask, summed per block) follows that code's ``estimate_block_importance`` and XAttention.
- Deviations: the public code compares the cumulative share *including* a block with the thresholds; here
  the share *before* it is compared (the block that crosses a threshold keeps the finer level, so the mass
  kept at level 1 is at least ``thresholds[0]``). Its text handling (the last ``text_length`` tokens dense)
  is replaced by this package's layout rules (any text block dense, wherever it is).
- Preset ``"videomme-0.65"``: aimed at the overall sparsity the PSA paper reports for its Video-MME rows
  (about 0.65). The thresholds the paper used for those rows could not be confirmed from public sources, so
  the preset uses ``mode="quota"`` (fixed cumulative shares of each row's blocks: 22 % level 1, 10 % level 2,
  10 % level 4, 18 % level 8, 40 % skipped; free-block density 0.3175), whose sparsity is about 0.65 by
  construction once the always-dense text, sink and diagonal blocks are counted, on long videos; stride 8.
  It and ``"public-qwen2.5-vl"`` keep every level-2 block Algorithm 2 gives (``lone_level2_exact=False``).

Plans are per query head by default (the estimate is per query head; ``plan_heads="kv"`` averages the
group's importance shares before selection).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .base import BlockLayout, Method, MethodConfig
from .scoring import (
    antidiagonal_block_scores,
    block_means,
    group_heads,
    pooled_block_scores,
    visible_key_counts,
    DEFAULT_MAX_ELEMENTS,
)
from .selection import MODES, cumulative_levels, lone_level2_exact_, no_same_level_neighbour

IMPORTANCE = ("antidiagonal", "pooled")
LONE_POOLED = ("keep", "exact", "skip")
PSA_LEVELS = (1, 2, 4, 8)
#: The default (also preset "exact-l8"): exact blocks for 55% of a row's estimated mass, every other visible block at
#: level 8 (nothing skipped), a level-8 block with no level-8 neighbour exact (module docstring).
EXACT_L8_THRESHOLDS = (0.55, 0.55, 0.55, 1.0)
#: The default until 2026-12-03 (preset "levels-4-8"): exact to 60%, level 4 to 80%, level 8 to 93%, the rest skipped.
LEVELS_4_8_THRESHOLDS = (0.6, 0.6, 0.8, 0.93)
#: The public PSA code's Qwen2.5-VL thresholds (presets "public-thresholds" and "public-qwen2.5-vl", on stride 8).
PUBLIC_THRESHOLDS = (0.7, 0.8, 0.9, 0.9)


def _as_floats(name: str, value, n: int) -> tuple[float, ...]:
    items = None if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
    if items is None or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in items):
        raise ValueError(f"{name} must be a list of {n} numbers, got {value!r}")
    out = tuple(float(x) for x in items)
    if len(out) != n:
        raise ValueError(f"{name} must have {n} entries, got {len(out)}: {out}")
    return out


@dataclass
class PSAConfig(MethodConfig):
    """Settings of the PSA planner (see the module docstring for where each default comes from).

    Attributes:
        thresholds: cumulative bounds for levels 1, 2, 4, 8 (non-decreasing, in [0, 1]); beyond the last the
            block is skipped. Meaning depends on ``mode``.
        mode: ``"energy"`` (shares of the row's importance) or ``"quota"`` (shares of the row's blocks).
        importance: ``"antidiagonal"`` or ``"pooled"``.
        stride: antidiagonal stride (must divide ``block_m`` and ``block_n``).
        sim_guard: pool a key block at level p only where its keys are alike (see ``sim_thresholds``).
        sim_thresholds: cosine thresholds for pooling 2, 4 and 8 keys.
        max_elements: memory bound of the antidiagonal estimate (tile logits materialised at once).
        lone_level2_exact: a level-2 block with no level-2 neighbour in its row is kept exact (step 6 above).
        lone_pooled: what becomes of a level-4 or level-8 block with no neighbour of its level in its row (the
            kernel reads it as a narrow tile of its own, at about 0.76 / 0.49 of an exact block where its share
            is 0.25 / 0.125): ``"exact"`` (default), ``"keep"`` or ``"skip"``.
    """

    thresholds: tuple[float, float, float, float] = (0.55, 0.55, 0.55, 1.0)
    mode: str = "energy"
    importance: str = "antidiagonal"
    stride: int = 16
    sim_guard: bool = False
    sim_thresholds: tuple[float, float, float] = (0.75, 0.7, 0.7)
    max_elements: int = DEFAULT_MAX_ELEMENTS
    lone_level2_exact: bool = True
    lone_pooled: str = "exact"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.thresholds = _as_floats("thresholds", self.thresholds, 4)
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds) or any(
            a > b for a, b in zip(self.thresholds, self.thresholds[1:])
        ):
            raise ValueError(f"thresholds must be non-decreasing values in [0, 1], got {self.thresholds}")
        self.sim_thresholds = _as_floats("sim_thresholds", self.sim_thresholds, 3)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.importance not in IMPORTANCE:
            raise ValueError(f"importance must be one of {IMPORTANCE}, got {self.importance!r}")
        if not isinstance(self.stride, int) or self.stride < 1 or self.block_m % self.stride or self.block_n % self.stride:
            raise ValueError(
                f"stride must be a positive integer dividing block_m ({self.block_m}) and block_n ({self.block_n}), "
                f"got {self.stride!r}"
            )
        for name in ("sim_guard", "lone_level2_exact"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.max_elements, int) or self.max_elements < 1:
            raise ValueError(f"max_elements must be a positive integer, got {self.max_elements!r}")
        if self.lone_pooled not in LONE_POOLED:
            raise ValueError(f"lone_pooled must be one of {LONE_POOLED}, got {self.lone_pooled!r}")


def key_pooling_allowance(k: torch.Tensor, block_n: int, sim_thresholds: tuple[float, float, float]) -> torch.Tensor:
    """Coarsest level each key block may be pooled at: int8 ``[B, Hkv, nKB]`` in {1, 2, 4, 8}.

    Level p passes when the mean cosine similarity of the first and last key of each group of p keys in the
    block exceeds its threshold (a partial last block is padded by repeating its last key).
    """
    b, h, length, d = k.shape
    n = -(-length // block_n)
    pad = n * block_n - length
    kp = torch.cat([k, k[..., -1:, :].expand(b, h, pad, d)], dim=-2) if pad else k
    unit = torch.nn.functional.normalize(kp.float(), dim=-1, eps=1e-6).reshape(b, h, n, block_n, d)
    allowed = torch.ones(b, h, n, dtype=torch.int8, device=k.device)
    for p, threshold in zip((2, 4, 8), sim_thresholds):
        if block_n % p:
            continue
        groups = unit.reshape(b, h, n, block_n // p, p, d)
        sim = (groups[..., 0, :] * groups[..., p - 1, :]).sum(-1).mean(-1)  # [B, H, nKB]
        allowed.masked_fill_(sim > threshold, p)
    return allowed


class PSA(Method):
    """Pyramid Sparse Attention: per row, finer levels for the blocks holding most attention mass."""

    name = "psa"
    config_class = PSAConfig
    select_applies_layout_rules = True
    presets = {
        "public-thresholds": {"thresholds": PUBLIC_THRESHOLDS, "stride": 8, "lone_pooled": "keep"},
        "public-qwen2.5-vl": {"thresholds": PUBLIC_THRESHOLDS, "stride": 8, "lone_level2_exact": False,
                              "lone_pooled": "keep"},
        "videomme-0.65": {"mode": "quota", "thresholds": (0.22, 0.32, 0.42, 0.60), "stride": 8,
                          "lone_level2_exact": False, "lone_pooled": "keep"},
        "exact-l8": {"thresholds": EXACT_L8_THRESHOLDS, "stride": 16, "lone_pooled": "exact"},
        "levels-4-8": {"thresholds": LEVELS_4_8_THRESHOLDS, "stride": 16, "lone_pooled": "keep"},
    }

    def plans_pooled(self) -> bool:
        # equal first and last thresholds leave levels 2, 4 and 8 empty intervals: exact or skipped blocks only
        return self.config.thresholds[0] < self.config.thresholds[3]

    def plans_skip(self) -> bool:
        # a last threshold of 1 gives every visible block at least level 8 (cumulative_levels), and the layout
        # rules, the lone steps and the similarity guard only make blocks finer, except lone_pooled="skip"
        return self.config.thresholds[3] < 1.0 or self.config.lone_pooled == "skip"

    def importance(self, q: torch.Tensor, k: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
        """Block importance ``[B, Hq, nQB, nKB]`` (only relative sizes within a row matter)."""
        cfg = self.config
        if cfg.importance == "antidiagonal":
            return antidiagonal_block_scores(
                q, k, stride=cfg.stride, block_m=cfg.block_m, block_n=cfg.block_n, causal=cfg.causal,
                max_elements=cfg.max_elements,
            )
        counts = visible_key_counts(k.shape[2], cfg.block_n, q.device)
        return pooled_block_scores(
            block_means(q, cfg.block_m), block_means(k, cfg.block_n), layout.classes,
            sm_scale=q.shape[-1] ** -0.5, key_counts=counts,
        )

    def select(self, q: torch.Tensor, k: torch.Tensor, layout: BlockLayout, plan_heads: int) -> torch.Tensor:
        cfg = self.config
        hq, hkv = q.shape[1], k.shape[1]
        share = self.importance(q, k, layout)
        if plan_heads != hq:
            share = group_heads(share / share.sum(-1, keepdim=True).clamp(min=1e-30), hkv, "mean")
        # the layout rules (forced blocks exact) and, without the similarity guard, the lone level-2 step and
        # lone_pooled="exact" are applied in the same launch as the level assignment: the result is the finished
        # plan (each lone step judges a block by its neighbours' levels before either step, so they commute)
        fused_lone = cfg.lone_pooled == "exact" and not cfg.sim_guard
        levels = cumulative_levels(
            share, layout.forced[:, None], layout.free[:, None], cfg.thresholds, levels=PSA_LEVELS, mode=cfg.mode,
            forced_level=1, lone_level2_exact=cfg.lone_level2_exact and not cfg.sim_guard,
            lone_exact=(4, 8) if fused_lone else (),
        )
        if cfg.sim_guard:
            allowed = key_pooling_allowance(k, cfg.block_n, cfg.sim_thresholds)  # [B, Hkv, nKB]
            if plan_heads != hkv:
                allowed = allowed.repeat_interleave(plan_heads // hkv, dim=1)
            levels = torch.where(levels > 1, torch.minimum(levels, allowed[:, :, None, :]), levels)
            if cfg.lone_level2_exact:
                levels = lone_level2_exact(levels)
        if cfg.lone_pooled != "keep" and not fused_lone:
            levels = lone_pooled_blocks(levels, 1 if cfg.lone_pooled == "exact" else 0)
        return levels


def lone_pooled_blocks(levels: torch.Tensor, to: int) -> torch.Tensor:
    """``levels`` with every level-4 or level-8 block that has no neighbour of its own level in its row
    (``[..., nKB]``) set to ``to`` (1: exact, 0: skipped)."""
    return levels.masked_fill((levels >= 4) & no_same_level_neighbour(levels), to)


def lone_level2_exact(levels: torch.Tensor) -> torch.Tensor:
    """``levels`` with every level-2 block that has no level-2 neighbour in its row (``[..., nKB]``) set to 1."""
    return lone_level2_exact_(levels.clone())
