"""Would a tail of several group means beat the one-mean tail? A CPU probe on the reference maths (float64).

Tail aggregation (DESIGN.md) folds every key a row skips into one key, their mean, with logit ``+ ln N``. The
warp-specialized kernel's tail step already runs a 16-column ``Q K^T`` and ``P V`` for it and masks 15 columns, so
16 keys would cost the step the same. This probe asks whether they would buy accuracy: the skipped blocks of a plan
row, in position order, split into ``G`` contiguous groups of whole blocks (each block its own group when fewer
than ``G`` are skipped), each group one key (its mean key and value, logit ``+ ln(its key count)``). It prints the
relative L2 error against dense attention of PSA's plans with no tail, the one-mean tail (``G = 1``, the
reference's) and ``G = 4`` and ``16``, on the video-like families of ``bench pareto`` and two input seeds.

    python notes/ab/group_tail_probe.py --frames 16 --grid 16 --preset videomme-0.65
"""

import argparse
import math

import torch

from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels.blocks import FULL, INVISIBLE, PARTIAL, POOLED_LEVELS, block_classes
from vlmsparse.kernels.reference import pool_keys
from vlmsparse.methods import get_method


def group_keys(kf, vf, skipped, block, groups):
    """Per (batch, head): the group means of the skipped blocks (``[G, D]`` key and value) and ``ln`` counts."""
    out = {}
    for bi in range(skipped.shape[0]):
        for h in range(skipped.shape[1]):
            blocks = torch.nonzero(skipped[bi, h]).flatten().tolist()
            if not blocks:
                continue
            g = min(groups, len(blocks))
            ks, vs, logs = [], [], []
            for i in range(g):
                chunk = blocks[i * len(blocks) // g:(i + 1) * len(blocks) // g]
                rows = torch.cat([torch.arange(j * block, (j + 1) * block) for j in chunk])
                rows = rows[rows < kf.shape[2]]
                ks.append(kf[bi, h, rows].mean(0))
                vs.append(vf[bi, h, rows].mean(0))
                logs.append(math.log(len(rows)))
            out[bi, h] = torch.stack(ks), torch.stack(vs), torch.tensor(logs, dtype=kf.dtype)
    return out


def attention(q, k, v, levels, groups, block=128):
    """Causal pyramid attention of ``levels`` with a tail of ``groups`` group means (0: no tail)."""
    b, hq, length, d = q.shape
    rep = hq // k.shape[1]
    scale = 1 / math.sqrt(d)
    qf, kf, vf = q.double(), k.double().repeat_interleave(rep, 1), v.double().repeat_interleave(rep, 1)
    lv = levels.long().repeat_interleave(hq // levels.shape[1], 1)
    cls = block_classes(length, length, block, block, True, q.device).long()
    key_block = torch.arange(length) // block
    pooled = {p: (*pool_keys(kf, p), pool_keys(vf, p)[0]) for p in POOLED_LEVELS}
    out = torch.zeros_like(qf)
    for qb in range(cls.shape[0]):
        rows = torch.arange(qb * block, min(length, qb * block + block))
        qr = qf[:, :, rows]
        c = cls[qb]
        eff = torch.where((c == PARTIAL) & (lv[:, :, qb] > 0), 1, lv[:, :, qb])
        eff = torch.where(c == INVISIBLE, 0, eff)
        visible = torch.arange(length)[None, :] <= rows[:, None]
        exact = (eff[..., key_block] == 1)[:, :, None, :] & visible
        logits = [(torch.einsum("bhrd,bhkd->bhrk", qr, kf) * scale).masked_fill(~exact, -math.inf)]
        values = [vf]
        for p, (kp, counts, vp) in pooled.items():
            first = torch.arange(kp.shape[-2]) * p
            use = (eff[..., key_block[first]] == p) & (c[key_block[first]] == FULL)
            s = torch.einsum("bhrd,bhgd->bhrg", qr, kp) * scale + torch.log(counts.double())
            logits.append(s.masked_fill(~use[:, :, None, :], -math.inf))
            values.append(vp)
        s_all = torch.cat(logits, -1)
        m = s_all.amax(-1, keepdim=True)
        tails = group_keys(kf, vf, (eff == 0) & (c == FULL), block, groups) if groups else {}
        for (bi, h), (kt, vt, logs) in tails.items():
            st = qr[bi, h] @ kt.T * scale + logs
            m[bi, h] = torch.maximum(m[bi, h], st.amax(-1, keepdim=True))
        w = torch.exp(s_all - m)
        den = w.sum(-1, keepdim=True)
        o, off = 0, 0
        for vv in values:
            o = o + torch.einsum("bhrg,bhgd->bhrd", w[..., off:off + vv.shape[-2]], vv)
            off += vv.shape[-2]
        for (bi, h), (kt, vt, logs) in tails.items():
            wt = torch.exp(qr[bi, h] @ kt.T * scale + logs - m[bi, h])
            den[bi, h] += wt.sum(-1, keepdim=True)
            o[bi, h] = o[bi, h] + wt @ vt
        out[:, :, rows] = o / den
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--grid", type=int, default=16, help="visual tokens per frame side")
    p.add_argument("--preset", default="videomme-0.65")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--groups", type=int, nargs="+", default=[0, 1, 4, 16])
    args = p.parse_args()
    for family in ("diffuse", "medium", "peaked"):
        for seed in args.seeds:
            q, k, v, visual = video_qkv(args.frames, args.grid, args.grid, heads_q=4, heads_kv=1, seed=seed,
                                        **FAMILIES[family])
            plan = get_method("psa", preset=args.preset).plan(q, k, visual)
            rep = q.shape[1] // k.shape[1]
            dense = torch.nn.functional.scaled_dot_product_attention(
                q.double(), k.double().repeat_interleave(rep, 1), v.double().repeat_interleave(rep, 1),
                is_causal=True)
            errs = [((attention(q, k, v, plan.levels, g) - dense).norm() / dense.norm()).item() for g in args.groups]
            print(f"{family:8s} seed {seed} L={q.shape[2]} " + " ".join(
                f"G{g}={e:.4f}" for g, e in zip(args.groups, errs)), flush=True)


if __name__ == "__main__":
    main()
