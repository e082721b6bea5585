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

    A NaN in q, k or v makes exactly the rows that use it NaN (a key at level 1 or in a pooled group or the tail
    key a row attends to); a row with nothing to attend is zero.
    """
    check_attention_args(q, k, v, levels, block_m, block_n, sm_scale=sm_scale)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    offset = lk - lq

    qf = q.to(compute_dtype)
    kf = k.to(compute_dtype).repeat_interleave(group, dim=1)  # the reference may repeat K/V; the kernel never does
    vf = v.to(compute_dtype).repeat_interleave(group, dim=1)
    # Weighted sums below multiply unused keys by 0, and 0 * NaN would spread a NaN to every row: sum over
    # finite copies and mark the rows that give weight to a non-finite key or value as NaN instead.
    k_bad = ~torch.isfinite(kf).all(-1)  # [B, H, Lk]
    v_bad = ~torch.isfinite(vf).all(-1)
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
            sk = skipped.to(compute_dtype)
            k_tail = torch.einsum("bhrj,bhjd->bhrd", sk, kf.nan_to_num(0.0, 0.0, 0.0)) / n.clamp(min=1)
            v_tail = torch.einsum("bhrj,bhjd->bhrd", sk, vf.nan_to_num(0.0, 0.0, 0.0)) / n.clamp(min=1)
            k_tail = k_tail.masked_fill((skipped & k_bad[:, :, None]).any(-1, keepdim=True), float("nan"))
            v_tail = v_tail.masked_fill((skipped & v_bad[:, :, None]).any(-1, keepdim=True), float("nan"))
            s_tail = (qr * k_tail).sum(-1, keepdim=True) * scale + torch.log(n.clamp(min=1))
            logits.append(s_tail.masked_fill(n == 0, float("-inf")))
        s_all = torch.cat(logits, dim=-1)
        m = s_all.amax(-1, keepdim=True)  # NaN where a used logit is NaN: the row stays NaN
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        w = torch.exp(s_all - m)  # exp(-inf) = 0 for unused keys
        denom = w.sum(-1, keepdim=True)
        o = torch.zeros_like(qr)
        used_bad = torch.zeros(*qr.shape[:-1], 1, dtype=torch.bool, device=q.device)
        w_keys = torch.split(w[..., : w.shape[-1] - (1 if tail else 0)], [x.shape[-2] for x in values], -1)
        for w_p, v_p in zip(w_keys, values):
            bad = ~torch.isfinite(v_p).all(-1)  # [B, H, G]
            o = o + torch.einsum("bhrg,bhgd->bhrd", w_p, v_p.nan_to_num(0.0, 0.0, 0.0))
            used_bad |= ((w_p > 0) & bad[:, :, None]).any(-1, keepdim=True)
        if tail:
            o = o + w[..., -1:] * v_tail
        o = o.masked_fill(used_bad, float("nan"))
        out[:, :, rows] = torch.where(denom == 0, torch.zeros_like(o), o / denom)
    return out.to(q.dtype)
