"""Micro-benchmark: what one kept block costs in the pyramid kernel's loops, by loop structure.

Each program (one query block of 128 rows, one q-head) visits ``n_exact`` exact key blocks and ``n_pool`` pooled
blocks of one level ``P`` (random block indices, as a sparse plan gives), with the online softmax. Pooled loop
structures compared:
  0: one pooled block per iteration (BLOCK_N / P keys per tile), one online-softmax update each
  1: P pooled blocks gathered into one [BLOCK_N, D] tile with one 3-D load ([P, BLOCK_N / P, D], reshaped)
  2: P pooled blocks per iteration as P sub-tiles: a first pass finds the row maxima, a second recomputes the
     logits and accumulates; one rescale of the accumulator per P blocks
Exact loop structures: BLOCK_N 128 per iteration, or a 128-key block visited as two 64-key halves.
The marginal cost of a block (time difference between workloads) is printed next to the exact block's.
Run on a GPU: python notes/pooled_variants.py
"""

import math
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _update(m_i, l_i, acc, qk, v):
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i, acc


@triton.jit
def _bench(Q, K, V, KP, VP, O, ExIdx, PoolIdx, n_exact, n_pool, L, HQ, HKV, qk_scale, corr,
           P: tl.constexpr, MODE: tl.constexpr, HALVES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
           D: tl.constexpr):
    qblk = tl.program_id(0)
    h = tl.program_id(1)
    kvh = h // (HQ // HKV)
    offs_m = qblk * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + h.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :])
    kb = K + kvh.to(tl.int64) * L * D
    vb = V + kvh.to(tl.int64) * L * D
    acc = tl.zeros([BM, D], dtype=tl.float32)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    ex = ExIdx + qblk * n_exact
    for t in range(0, n_exact):
        j = tl.load(ex + t)
        if HALVES:
            HALF: tl.constexpr = BN // 2
            offs_h = tl.arange(0, HALF)
            for s in tl.static_range(2):
                cols = j * BN + s * HALF + offs_h
                k = tl.load(kb + cols[:, None] * D + offs_d[None, :])
                v = tl.load(vb + cols[:, None] * D + offs_d[None, :])
                m_i, l_i, acc = _update(m_i, l_i, acc, tl.dot(q, tl.trans(k)) * qk_scale, v)
        else:
            cols = j * BN + tl.arange(0, BN)
            k = tl.load(kb + cols[:, None] * D + offs_d[None, :])
            v = tl.load(vb + cols[:, None] * D + offs_d[None, :])
            m_i, l_i, acc = _update(m_i, l_i, acc, tl.dot(q, tl.trans(k)) * qk_scale, v)

    G: tl.constexpr = BN // P  # pooled keys per block
    LP = L // P
    kpb = KP + kvh.to(tl.int64) * LP * D
    vpb = VP + kvh.to(tl.int64) * LP * D
    pl = PoolIdx + qblk * n_pool
    offs_g = tl.arange(0, G)
    if MODE == 0:
        for t in range(0, n_pool):
            j = tl.load(pl + t)
            g = j * G + offs_g
            kp = tl.load(kpb + g[:, None] * D + offs_d[None, :])
            vp = tl.load(vpb + g[:, None] * D + offs_d[None, :])
            m_i, l_i, acc = _update(m_i, l_i, acc, tl.dot(q, tl.trans(kp)) * qk_scale + corr, vp)
    elif MODE == 1:
        offs_p = tl.arange(0, P)
        for t in range(0, n_pool, P):
            js = tl.load(pl + t + offs_p)
            rows = js[:, None, None] * G + offs_g[None, :, None]
            ptr_off = rows * D + offs_d[None, None, :]
            kp = tl.reshape(tl.load(kpb + ptr_off), [BN, D])
            vp = tl.reshape(tl.load(vpb + ptr_off), [BN, D])
            m_i, l_i, acc = _update(m_i, l_i, acc, tl.dot(q, tl.trans(kp)) * qk_scale + corr, vp)
    else:
        for t in range(0, n_pool, P):
            m_blk = m_i
            for s in tl.static_range(P):
                j = tl.load(pl + t + s)
                g = j * G + offs_g
                kp = tl.load(kpb + g[:, None] * D + offs_d[None, :])
                m_blk = tl.maximum(m_blk, tl.max(tl.dot(q, tl.trans(kp)), 1) * qk_scale + corr)
            alpha = tl.math.exp2(m_i - m_blk)
            acc = acc * alpha[:, None]
            l_i = l_i * alpha
            for s in tl.static_range(P):
                j = tl.load(pl + t + s)
                g = j * G + offs_g
                kp = tl.load(kpb + g[:, None] * D + offs_d[None, :])
                vp = tl.load(vpb + g[:, None] * D + offs_d[None, :])
                p = tl.math.exp2(tl.dot(q, tl.trans(kp)) * qk_scale + (corr - m_blk[:, None]))
                l_i += tl.sum(p, 1)
                acc = tl.dot(p.to(vp.dtype), vp, acc)
            m_i = m_blk
    out = acc / l_i[:, None]
    tl.store(O + h.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :], out.to(tl.bfloat16))


def main(L=32768, HQ=28, HKV=4, D=128, device="cuda", dtype=torch.bfloat16, configs=((8, 2), (8, 3), (8, 4))):
    BM = BN = 128
    torch.manual_seed(0)
    q = torch.randn(HQ, L, D, device=device, dtype=dtype)
    k = torch.randn(HKV, L, D, device=device, dtype=dtype)
    v = torch.randn(HKV, L, D, device=device, dtype=dtype)
    pooled = {p: (k.view(HKV, L // p, p, D).float().mean(2).to(k.dtype).contiguous(),
                  v.view(HKV, L // p, p, D).float().mean(2).to(v.dtype).contiguous()) for p in (2, 4, 8)}
    o = torch.empty_like(q)
    n_qb, n_kb = L // BM, L // BN
    scale = D ** -0.5 * 1.4426950408889634

    lists = {}

    def idx(n):
        if n not in lists:  # the same random lists for every variant, so their outputs can be compared
            g = torch.Generator().manual_seed(n)
            lists[n] = torch.randint(0, n_kb, (n_qb, max(n, 1)), generator=g, dtype=torch.int32).to(device)
        return lists[n]

    def bench(n_exact, n_pool, p, mode, halves=False, warps=8, stages=3):
        ex, pl = idx(n_exact), idx(n_pool)
        kp, vp = pooled[p]
        fn = lambda: _bench[(n_qb, HQ)](q, k, v, kp, vp, o, ex, pl, n_exact, n_pool, L, HQ, HKV, scale, math.log2(p), P=p,
                                        MODE=mode, HALVES=halves, BM=BM, BN=BN, D=D, num_warps=warps,
                                        num_stages=stages)
        try:
            if device == "cpu":
                fn()
                t = 0.0
            else:
                t = triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")
            return t, o.clone()
        except Exception as e:  # a variant may not compile on this Triton: report and go on
            print(f"  failed: exact={n_exact} pool={n_pool} P={p} mode={mode}: {type(e).__name__}: {str(e)[:300]}")
            return float("nan"), None

    print(f"L={L} Hq={HQ} Hkv={HKV} D={D} bf16, {n_qb} query blocks x {HQ} heads per launch")
    for warps, stages in configs:
        t8, _ = bench(8, 0, 2, 0, warps=warps, stages=stages)
        t16, _ = bench(16, 0, 2, 0, warps=warps, stages=stages)
        t16h, _ = bench(16, 0, 2, 0, halves=True, warps=warps, stages=stages)
        t8h, _ = bench(8, 0, 2, 0, halves=True, warps=warps, stages=stages)
        print(f"w{warps}s{stages} exact only: 8 blocks {t8:.3f} ms, 16 blocks {t16:.3f} ms, "
              f"exact block {(t16 - t8) / 8 * 1e3:.2f} us/launch; halves: 8 {t8h:.3f} 16 {t16h:.3f} "
              f"-> {(t16h - t8h) / 8 * 1e3:.2f} us/launch", flush=True)
        for p in (2, 4, 8):
            n = 32
            outs = {}
            for mode in (0, 1, 2):
                t, out = bench(8, n, p, mode, warps=warps, stages=stages)
                outs[mode] = out
                ref = outs.get(0)
                err = float("nan") if out is None or ref is None else (
                    (out.float() - ref.float()).norm() / ref.float().norm()).item()
                print(f"  P={p} mode={mode}: 8 exact + {n} pooled {t:.3f} ms, pooled block "
                      f"{(t - t8) / n * 1e3:.2f} us/launch ({(t - t8) / n / max((t16 - t8) / 8, 1e-9):.2f} of an exact block), "
                      f"diff vs mode 0 {err:.1e}", flush=True)


if __name__ == "__main__":
    if "--smoke" in sys.argv:  # tiny CPU run under TRITON_INTERPRET=1: the variants agree
        main(L=1024, HQ=2, HKV=1, D=32, device="cpu", dtype=torch.float32, configs=((4, 1),))
    else:
        main()
