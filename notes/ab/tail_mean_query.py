"""The tail's error with the query block's mean query in place of each row's (CPU, float64 maths, no kernel).

Relative L2 error against dense attention, per input family, seed and plan: without tail, with the tail of the
contract (logit ``q_i . k_tail + ln n`` per row), with the query block's mean query (``qbar . k_tail + ln n``, one
logit per query block), and with the ideal tail (the skipped keys' exact log-sum-exp and weighted value). Usage:
``PYTHONPATH=. TRITON_INTERPRET=1 python notes/ab/tail_mean_query.py [FRAMES]`` (16 frames: 4,192 tokens, about 10
minutes on two cores).
"""
import math
import sys

import torch
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.methods import get_method
from vlmsparse.kernels.reference import pool_keys
from vlmsparse.kernels.blocks import block_classes, FULL, PARTIAL, INVISIBLE
torch.set_num_threads(max(1, torch.get_num_threads()))
BM = BN = 128

def outputs(q, k, v, levels, heads):
    """per head: dense, no tail, row tail, block-q tail, ideal tail (float64)."""
    b, hq, L, d = q.shape; g = hq // k.shape[1]; scale = 1 / math.sqrt(d)
    cls = block_classes(L, L, BM, BN, True, q.device).long()
    nqb = cls.shape[0]
    kb = torch.arange(L) // BN; qb = torch.arange(L) // BM
    vis = torch.arange(L)[None, :] <= torch.arange(L)[:, None]
    res = {n: [] for n in ("dense", "none", "row", "blockq", "ideal")}
    for h in heads:
        qf = q[0, h].double(); kf = k[0, h // g].double(); vf = v[0, h // g].double()
        lv = levels[0, h if levels.shape[1] == hq else h // g].long()  # [nqb, nkb]
        eff = torch.where((cls == PARTIAL) & (lv > 0), torch.ones_like(lv), lv)
        eff = torch.where(cls == INVISIBLE, torch.zeros_like(eff), eff)
        S = qf @ kf.T * scale
        Sd = S.masked_fill(~vis, -math.inf)
        Pd = torch.softmax(Sd, -1); res["dense"].append(Pd @ vf)
        logits, vals = [], []
        for p in (1, 2, 4, 8):
            if p == 1:
                use = (eff[qb][:, kb] == 1) & vis; logits.append(Sd.masked_fill(~use, -math.inf)); vals.append(vf)
            else:
                kp, cnt = pool_keys(kf, p); vp, _ = pool_keys(vf, p)
                gb = (torch.arange(kp.shape[0]) * p) // BN
                use = (eff[qb][:, gb] == p) & (cls[qb][:, gb] == FULL)
                s = qf @ kp.T * scale + torch.log(cnt.double())
                logits.append(s.masked_fill(~use, -math.inf)); vals.append(vp)
        skipped = (eff[qb][:, kb] == 0) & vis  # [L, L]
        n = skipped.sum(-1, keepdim=True).double()
        kt = (skipped.double() @ kf) / n.clamp(min=1); vt = (skipped.double() @ vf) / n.clamp(min=1)
        qbar = torch.stack([qf[i * BM:(i + 1) * BM].mean(0) for i in range(nqb)])[qb]
        s_row = (qf * kt).sum(-1, keepdim=True) * scale + torch.log(n.clamp(min=1))
        s_blk = (qbar * kt).sum(-1, keepdim=True) * scale + torch.log(n.clamp(min=1))
        # ideal: exact skipped mass and its weighted value
        Ss = S.masked_fill(~skipped, -math.inf); lse_s = torch.logsumexp(Ss, -1, keepdim=True)
        ws = torch.exp(Ss - torch.where(torch.isinf(lse_s), torch.zeros_like(lse_s), lse_s))
        v_ideal = ws @ vf
        for name, st, vv in (("none", None, None), ("row", s_row, vt), ("blockq", s_blk, vt), ("ideal", lse_s, v_ideal)):
            lg = list(logits); va = list(vals)
            s_all = torch.cat(lg + ([st.masked_fill(n == 0, -math.inf)] if st is not None else []), -1)
            m = s_all.amax(-1, keepdim=True); w = torch.exp(s_all - m)
            o = sum(w[:, a:a + x.shape[0]] @ x for a, x in zip(torch.tensor([0] + [t.shape[1] for t in lg]).cumsum(0).tolist(), va))
            if st is not None:
                o = o + w[:, -1:] * vv
            res[name].append(o / w.sum(-1, keepdim=True))
    return {n: torch.stack(x) for n, x in res.items()}

def rel(a, b): return float((a - b).norm() / b.norm())

frames = int(sys.argv[1]) if len(sys.argv) > 1 else 12
heads = list(range(0, 28, 3))
methods = [("xattention", {}), ("psa", {"preset": "videomme-0.65"}), ("xattention", {"threshold": 0.7})]
for fam in ("diffuse", "medium", "peaked"):
    for seed in (3, 4):
        q, k, v, visual = video_qkv(frames, 16, 16, seed=1000 * seed + frames, **FAMILIES[fam])
        for mname, kw in methods:
            try:
                m = get_method(mname, **kw)
            except Exception as e:
                print(mname, kw, e); continue
            plan = m.plan(q, k, visual, None)
            lv = plan.levels
            o = outputs(q, k, v, lv, heads)
            print(f"{fam:8s} s{seed} {mname}{kw} sparsity {plan.sparsity().overall:.3f} none {rel(o['none'], o['dense']):.4f} "
                  f"row {rel(o['row'], o['dense']):.4f} blockq {rel(o['blockq'], o['dense']):.4f} ideal {rel(o['ideal'], o['dense']):.4f}", flush=True)
