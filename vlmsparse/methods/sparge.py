"""``sparge``: SpargeAttn's selective token compression (binary plan, levels 0 / 1).

Per block: the mean of its queries (query blocks) or keys (key blocks), and a self-similarity test, the mean
pairwise cosine similarity of its tokens. Query blocks whose tokens are not alike (similarity at or under
``sim_threshold``) are computed in full; key blocks whose keys are not alike are kept in every row and left
out of the pooled map. The pooled attention map is the softmax of ``mean(q_I) . mean(k_J) / sqrt(D)`` over the
visible, alike key blocks; per row, blocks are taken in descending order while the cumulative probability
(CDF) stays at or under ``cdf_threshold`` (blocks the layout rules keep count first). Everything else is
skipped.

Where the defaults come from (public code ``thu-ml/SpargeAttn``, ``spas_sage_attn``):

- ``sim_threshold = 0.6``, ``cdf_threshold = 0.98``: the defaults of its ready-made API
  ``spas_sage2_attn_meansim_cuda`` (``simthreshd1=0.6, cdfthreshd=0.98``). The paper tunes these per model
  (and per layer and head) against an error target; it publishes no setting for video understanding with a
  VLM, so these are the library defaults, not a tuned Qwen2.5-VL setting.
- ``block_m = 128``, ``block_n = 64``: its block sizes (``BLKQ=128``, ``BLKK=64``).
- ``smooth_k = True``: keys are centred by their mean over the sequence before the similarity test (its
  ``smooth_k`` default; centring does not change the pooled softmax).
- The selection rule ``searchsorted(cdf, threshold, right=True)`` (blocks whose CDF is at or under the
  threshold), the ``-inf`` for dissimilar key blocks before the softmax, and the similarity statistic
  (mean of the Gram matrix of unit vectors): its ``get_block_map_meansim``.
- Not taken: its second stage (skipping P.V products in-kernel under ``pvthreshd``) lives in its own CUDA
  kernel and has no counterpart in the pyramid kernel; its int8 / fp8 quantisation likewise.

Raising ``cdf_threshold`` never lowers a plan's cost. Raising ``sim_threshold`` forces more blocks but need
not: a dissimilar key block leaves the pooled softmax, which renormalises the others, so a row can then
reach its CDF threshold with fewer free blocks.

Plans are per query head by default (the pooled map is per query head; ``plan_heads="kv"`` averages the
group's probabilities and keeps a block forced if any head of the group forces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import BlockLayout, Method, MethodConfig
from .scoring import block_mean_and_similarity, group_heads, pooled_block_scores
from .selection import cumulative_levels


@dataclass
class SpargeConfig(MethodConfig):
    """Settings of the SpargeAttn planner.

    Attributes:
        sim_threshold: blocks with mean pairwise cosine similarity at or under this are not compressed
            (query blocks: the whole row is computed; key blocks: the whole column is computed).
        cdf_threshold: per row, keep blocks while the pooled map's cumulative probability is at or under this.
        smooth_k: centre the keys (subtract their sequence mean) before the similarity test.
    """

    block_m: int = 128
    block_n: int = 64
    sim_threshold: float = 0.6
    cdf_threshold: float = 0.98
    smooth_k: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("sim_threshold", "cdf_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        if not -1.0 <= self.sim_threshold <= 1.0:
            raise ValueError(f"sim_threshold must be in [-1, 1] (a cosine similarity), got {self.sim_threshold}")
        if not 0.0 <= self.cdf_threshold <= 1.0:
            raise ValueError(f"cdf_threshold must be in [0, 1], got {self.cdf_threshold}")
        if not isinstance(self.smooth_k, bool):
            raise ValueError(f"smooth_k must be true or false, got {self.smooth_k!r}")


class Sparge(Method):
    """Block means, a self-similarity test, a pooled attention map and a per-row CDF cut; binary plan."""

    name = "sparge"
    config_class = SpargeConfig
    presets = {"library-defaults": {}}

    def plans_pooled(self) -> bool:
        return False  # binary plans (levels 0 / 1)

    def select(self, q: torch.Tensor, k: torch.Tensor, layout: BlockLayout, plan_heads: int) -> torch.Tensor:
        cfg = self.config
        b, hq = q.shape[:2]
        hkv = k.shape[1]
        group = hq // hkv
        k_center = k.mean(-2, dtype=torch.float32) if cfg.smooth_k else None  # [B, Hkv, D]
        q_mean, q_sim = block_mean_and_similarity(q, cfg.block_m)
        k_mean, k_sim = block_mean_and_similarity(k, cfg.block_n, center=k_center)
        q_alike = q_sim > cfg.sim_threshold  # [B, Hq, nQB]
        k_apart = (k_sim <= cfg.sim_threshold).repeat_interleave(group, dim=1)  # [B, Hq, nKB]
        probs = pooled_block_scores(
            q_mean, k_mean, layout.classes, sm_scale=q.shape[-1] ** -0.5, exclude_keys=k_apart,
        )
        forced = layout.forced[:, None] | (~q_alike)[..., None] | k_apart[:, :, None, :]
        if plan_heads != hq:
            probs = group_heads(probs, hkv, "mean")
            forced = group_heads(forced, hkv, "any")
        free = layout.free[:, None] & ~forced
        levels = cumulative_levels(probs, forced, free, (cfg.cdf_threshold,), levels=(1,), rule="inclusive")
        # dissimilar blocks are kept exactly (the layout rules only force the layout's own blocks)
        visible = layout.visible[None, None]
        return torch.where(forced & visible, torch.ones_like(levels), levels)
