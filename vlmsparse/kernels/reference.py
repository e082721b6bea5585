"""Plain-PyTorch pyramid sparse attention: the definition the Triton kernel is tested against.

Written for clarity, not speed: every (query, key-or-pooled-key) logit is materialised in float64.
"""

from __future__ import annotations

import math

import torch

from .blocks import FULL, INVISIBLE, PARTIAL, POOLED_LEVELS, block_classes
from .validation import check_attention_args


def pool_keys(x: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``x [..., L, D]`` over groups of ``p`` consecutive positions; also each group's size.

    The last group may be partial (``n < p`` positions): its mean is over those ``n``.
    """
    length = x.shape[-2]
    groups = -(-length // p)
    pad = groups * p - length
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad))
    sums = xp.reshape(*x.shape[:-2], groups, p, x.shape[-1]).sum(-2)
    counts = torch.clamp(length - torch.arange(groups, device=x.device) * p, max=p)
    return sums / counts.to(x.dtype)[:, None], counts


def pyramid_attention_ref(
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
    row_chunk: int = 1024,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Pyramid sparse attention by its definition (see ``pyramid_attention`` for the arguments).

    ``row_chunk`` bounds memory: query rows are processed that many at a time. ``compute_dtype`` is float64 for
    the definition; float32 is the same maths, faster (the CPU fidelity sweep uses it).
    """
    check_attention_args(q, k, v, levels, block_m, block_n)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    offset = lk - lq

    qf = q.to(compute_dtype)
    kf = k.to(compute_dtype).repeat_interleave(group, dim=1)  # the reference may repeat K/V; the kernel never does
    vf = v.to(compute_dtype).repeat_interleave(group, dim=1)
    lv = levels.long()
    if lv.shape[1] != hq:
        lv = lv.repeat_interleave(group, dim=1)

    cls = block_classes(lq, lk, block_m, block_n, causal, q.device)
    key_block = torch.arange(lk, device=q.device) // block_n
    keys_of_level = {1: (kf, vf, torch.ones(lk, device=q.device, dtype=torch.long), torch.arange(lk, device=q.device))}
    for p in POOLED_LEVELS:
        kp, counts = pool_keys(kf, p)
        vp, _ = pool_keys(vf, p)
        first_key = torch.arange(kp.shape[-2], device=q.device) * p
        keys_of_level[p] = (kp, vp, counts, first_key)

    out = torch.zeros(b, hq, lq, d, dtype=compute_dtype, device=q.device)
    for r0 in range(0, lq, row_chunk):
        rows = torch.arange(r0, min(r0 + row_chunk, lq), device=q.device)
        qb = rows // block_m
        lv_rows = lv[:, :, qb]  # [B, H, R, nKB]
        cls_rows = cls[qb].long()  # [R, nKB]
        # effective level per (row, key block): invisible -> 0, pooled on the diagonal -> exact
        eff = torch.where((cls_rows == PARTIAL) & (lv_rows > 0), torch.ones_like(lv_rows), lv_rows)
        eff = torch.where(cls_rows == INVISIBLE, torch.zeros_like(eff), eff)
        if causal:
            visible = torch.arange(lk, device=q.device)[None, :] <= (rows + offset)[:, None]  # [R, Lk]
        else:
            visible = torch.ones(len(rows), lk, dtype=torch.bool, device=q.device)
        qr = qf[:, :, rows]

        logits, values = [], []
        for p, (kp, vp, counts, first_key) in keys_of_level.items():
            use = eff[..., key_block[first_key]] == p  # [B, H, R, G]
            if p == 1:
                use = use & visible
            else:
                # pooled keys only where the whole block is visible to the whole query block
                use = use & (cls_rows[:, key_block[first_key]] == FULL)
            s = torch.einsum("bhrd,bhgd->bhrg", qr, kp) * scale + torch.log(counts.to(compute_dtype))
            logits.append(s.masked_fill(~use, float("-inf")))
            values.append(vp)
        if tail:
            skipped = (eff[..., key_block] == 0) & visible  # [B, H, R, Lk]
            n = skipped.sum(-1, keepdim=True).to(compute_dtype)  # [B, H, R, 1]
            k_tail = torch.einsum("bhrj,bhjd->bhrd", skipped.to(compute_dtype), kf) / n.clamp(min=1)
            v_tail = torch.einsum("bhrj,bhjd->bhrd", skipped.to(compute_dtype), vf) / n.clamp(min=1)
            s_tail = (qr * k_tail).sum(-1, keepdim=True) * scale + torch.log(n.clamp(min=1))
            logits.append(s_tail.masked_fill(n == 0, float("-inf")))
        s_all = torch.cat(logits, dim=-1)
        m = s_all.amax(-1, keepdim=True)
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        w = torch.exp(s_all - m)  # exp(-inf) = 0 for unused keys
        denom = w.sum(-1, keepdim=True)
        o = sum(
            torch.einsum("bhrg,bhgd->bhrd", w_p, v_p)
            for w_p, v_p in zip(torch.split(w[..., : w.shape[-1] - (1 if tail else 0)], [x.shape[-2] for x in values], -1), values)
        )
        if tail:
            o = o + w[..., -1:] * v_tail
        out[:, :, rows] = torch.where(denom > 0, o / denom.clamp(min=torch.finfo(compute_dtype).tiny), torch.zeros_like(o))
    return out.to(q.dtype)
