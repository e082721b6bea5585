"""Pyramid sparse attention in plain PyTorch, one query block at a time: the CPU path of a patched model.

The same maths as :func:`vlmsparse.kernels.reference.pyramid_attention_ref` (tested equal to it), computed the way
the Triton kernel walks a plan: for each (sample, query block, plan head) only the kept keys are gathered (the
exact keys of level-1 blocks, the pooled keys of level-p blocks, and with ``tail`` one mean key per row over
the skipped ones), so the work follows the plan's density instead of the whole ``Lq x Lk`` grid. The reference
materialises every logit of every level in float64; this path is what makes a sparse prefill on a CPU cost
about what a dense one costs.
"""

from __future__ import annotations

import math

import torch

from .blocks import INVISIBLE, PARTIAL, POOLED_LEVELS, block_classes
from .reference import pool_keys
from .validation import check_attention_args

__all__ = ["pyramid_attention_blockwise"]


def _block_keys(blocks: torch.Tensor, block_n: int, length: int, step: int = 1) -> torch.Tensor:
    """Indices of the positions (``step`` 1) or pooled groups (``step`` p) that the key ``blocks`` cover."""
    per_block = block_n // step
    idx = (blocks[:, None] * per_block + torch.arange(per_block, device=blocks.device)[None, :]).flatten()
    return idx[idx < length]


def pyramid_attention_blockwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    levels: torch.Tensor,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    block_m: int = 128,
    block_n: int = 128,
    tail: bool = False,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pyramid sparse attention (arguments as ``pyramid_attention``), block row by block row on any device.

    ``compute_dtype`` is float32 by default (float64 matches the reference to rounding). Returns ``[B, Hq, Lq, D]``
    in the dtype of ``q``.
    """
    check_attention_args(q, k, v, levels, block_m, block_n)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    hm = levels.shape[1]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    offset = lk - lq
    device = q.device

    qf, kf, vf = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
    pooled = {}
    for p in POOLED_LEVELS:
        kp, counts = pool_keys(kf, p)
        vp, _ = pool_keys(vf, p)
        pooled[p] = (kp, vp, torch.log(counts.to(compute_dtype)))
    cls = block_classes(lq, lk, block_m, block_n, causal, device).long()
    lv_all = levels.long()
    out = torch.zeros(b, hq, lq, d, dtype=compute_dtype, device=device)

    for bi in range(b):
        for qb in range(cls.shape[0]):
            r0, r1 = qb * block_m, min((qb + 1) * block_m, lq)
            rows = torch.arange(r0, r1, device=device)
            limit = rows + offset  # row i sees key j iff j <= limit[i] (causal)
            cls_row = cls[qb]
            for h in range(hm):
                # the query heads this plan head covers, and their K/V head
                heads = slice(h, h + 1) if hm == hq else slice(h * group, (h + 1) * group)
                kvh = (h // group) if hm == hq else h
                lv = lv_all[bi, h, qb]
                eff = torch.where((cls_row == PARTIAL) & (lv > 0), torch.ones_like(lv), lv)
                eff = torch.where(cls_row == INVISIBLE, torch.zeros_like(eff), eff)
                qr = qf[bi, heads, r0:r1]  # [G, R, D]
                logits, values = [], []

                exact = _block_keys((eff == 1).nonzero().flatten(), block_n, lk)
                if exact.numel():
                    s = torch.matmul(qr, kf[bi, kvh, exact].T) * scale
                    if causal:
                        s = s.masked_fill(exact[None, :] > limit[:, None], float("-inf"))
                    logits.append(s)
                    values.append(vf[bi, kvh, exact])
                for p, (kp, vp, log_counts) in pooled.items():
                    # pooled levels only occur on FULL blocks here (a diagonal block at level > 0 is exact)
                    groups = _block_keys((eff == p).nonzero().flatten(), block_n, kp.shape[-2], step=p)
                    if groups.numel():
                        logits.append(torch.matmul(qr, kp[bi, kvh, groups].T) * scale + log_counts[groups])
                        values.append(vp[bi, kvh, groups])
                if tail:
                    skipped = _block_keys(((eff == 0) & (cls_row != INVISIBLE)).nonzero().flatten(), block_n, lk)
                    seen = torch.ones(len(rows), skipped.numel(), dtype=torch.bool, device=device)
                    if causal:
                        seen = skipped[None, :] <= limit[:, None]
                    weights = seen.to(compute_dtype)  # [R, S]
                    n = weights.sum(-1, keepdim=True)  # [R, 1]
                    k_tail = (weights @ kf[bi, kvh, skipped]) / n.clamp(min=1)  # [R, D]
                    v_tail = (weights @ vf[bi, kvh, skipped]) / n.clamp(min=1)
                    s_tail = (qr * k_tail).sum(-1, keepdim=True) * scale + torch.log(n.clamp(min=1))
                    logits.append(s_tail.masked_fill(n == 0, float("-inf")))
                if not logits:
                    continue  # nothing to attend: the rows stay zero
                s_all = torch.cat(logits, dim=-1)  # [G, R, N]
                m = s_all.amax(-1, keepdim=True)
                m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
                w = torch.exp(s_all - m)
                denom = w.sum(-1, keepdim=True)
                n_plain = sum(x.shape[0] for x in values)
                o = torch.matmul(w[..., :n_plain], torch.cat(values)) if values else torch.zeros_like(qr)
                if tail:
                    o = o + w[..., n_plain:] * v_tail
                o = torch.where(denom > 0, o / denom.clamp(min=torch.finfo(compute_dtype).tiny), torch.zeros_like(o))
                out[bi, heads, r0:r1] = o
    return out.to(q.dtype)
