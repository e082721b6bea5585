"""Pyramid sparse attention in float32 plain PyTorch, for CPU benchmarks.

Same maths as :func:`vlmsparse.kernels.reference.pyramid_attention_ref` (tests check the two agree), written
for speed rather than clarity: float32 instead of float64, K/V never repeated (grouped matmuls), one pass
per level over a chunk of query rows. It exists because the float64 reference is too slow for a fidelity
sweep at a few thousand tokens on a CPU; on CUDA the Triton kernel is used instead.
"""

from __future__ import annotations

import math

import torch

from vlmsparse.kernels.blocks import INVISIBLE, PARTIAL, POOLED_LEVELS, block_classes, cdiv
from vlmsparse.kernels.reference import pool_keys
from vlmsparse.kernels.validation import check_attention_args

__all__ = ["pyramid_attention_f32"]


def _grouped_logits(q: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """``q [B, Hq, R, D] . keys [B, Hkv, G, D]^T -> [B, Hq, R, G]`` without repeating keys."""
    b, hq, r, d = q.shape
    hkv = keys.shape[1]
    s = torch.matmul(q.reshape(b, hkv, (hq // hkv) * r, d), keys.transpose(-1, -2))
    return s.reshape(b, hq, r, keys.shape[2]) * scale


def _grouped_values(w: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``w [B, Hq, R, G] @ values [B, Hkv, G, D] -> [B, Hq, R, D]``."""
    b, hq, r, g = w.shape
    hkv, d = values.shape[1], values.shape[3]
    return torch.matmul(w.reshape(b, hkv, (hq // hkv) * r, g), values).reshape(b, hq, r, d)


def pyramid_attention_f32(
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
    row_chunk: int = 512,
) -> torch.Tensor:
    """Float32 pyramid sparse attention; arguments as ``pyramid_attention``. Returns float32 ``[B, Hq, Lq, D]``."""
    check_attention_args(q, k, v, levels, block_m, block_n)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    offset = lk - lq
    qf, kf, vf = q.float(), k.float(), v.float()
    lv = levels.long()
    if lv.shape[1] != hq:
        lv = lv.repeat_interleave(hq // lv.shape[1], dim=1)
    cls = block_classes(lq, lk, block_m, block_n, causal, q.device).long()
    eff = torch.where((cls == PARTIAL) & (lv > 0), torch.ones_like(lv), lv)
    eff = torch.where(cls == INVISIBLE, torch.zeros_like(eff), eff).to(torch.int8)  # [B, Hq, nQB, nKB]
    key_block = torch.arange(lk, device=q.device) // block_n
    pyramid = {p: (pool_keys(kf, p), pool_keys(vf, p)[0]) for p in POOLED_LEVELS}
    row_chunk = max(block_m, row_chunk // block_m * block_m)
    out = torch.empty(b, hq, lq, d, dtype=torch.float32, device=q.device)
    keys = torch.arange(lk, device=q.device)
    for r0 in range(0, lq, row_chunk):
        r1 = min(r0 + row_chunk, lq)
        rows = torch.arange(r0, r1, device=q.device)
        # keys past the chunk's last causal limit are invisible to all its rows: leave them out
        n_keys = min(lk, r1 + offset) if causal else lk
        kc, vc, kb = kf[:, :, :n_keys], vf[:, :, :n_keys], key_block[:n_keys]
        eff_rows = eff[:, :, rows // block_m]  # [B, Hq, R, nKB]
        if causal:
            visible = keys[None, :n_keys] <= (rows + offset)[:, None]
        else:
            visible = torch.ones(len(rows), n_keys, dtype=torch.bool, device=q.device)
        qc = qf[:, :, r0:r1]
        token_level = eff_rows[..., kb]  # [B, Hq, R, n_keys]
        logits = [_grouped_logits(qc, kc, scale).masked_fill(~((token_level == 1) & visible), float("-inf"))]
        values = [vc]
        for p, ((kp, counts), vp) in pyramid.items():
            n_groups = cdiv(n_keys, p)
            first_key = torch.arange(n_groups, device=q.device) * p
            use = eff_rows[..., key_block[first_key]] == p
            s = _grouped_logits(qc, kp[:, :, :n_groups], scale) + torch.log(counts[:n_groups].float())
            logits.append(s.masked_fill(~use, float("-inf")))
            values.append(vp[:, :, :n_groups])
        if tail:
            skipped = ((token_level == 0) & visible).float()  # [B, Hq, R, n_keys]
            n = skipped.sum(-1, keepdim=True)
            k_tail = _grouped_values(skipped, kc) / n.clamp(min=1)
            v_tail = _grouped_values(skipped, vc) / n.clamp(min=1)
            s_tail = (qc * k_tail).sum(-1, keepdim=True) * scale + torch.log(n.clamp(min=1))
            logits.append(s_tail.masked_fill(n == 0, float("-inf")))
        m = torch.stack([s.amax(-1) for s in logits], -1).amax(-1, keepdim=True)
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        acc = torch.zeros(b, hq, r1 - r0, d, dtype=torch.float32, device=q.device)
        denom = torch.zeros(b, hq, r1 - r0, 1, dtype=torch.float32, device=q.device)
        for i, s in enumerate(logits):
            w = torch.exp(s - m)
            denom += w.sum(-1, keepdim=True)
            acc += w * v_tail if (tail and i == len(logits) - 1) else _grouped_values(w, values[i])
        out[:, :, r0:r1] = torch.where(denom > 0, acc / denom.clamp(min=1e-30), torch.zeros_like(acc))
    return out
