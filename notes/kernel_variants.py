"""Micro-benchmark of the exact-block loop in three forms, to see what indirection and TMA cost on Hopper.

Each program walks the key blocks strictly before its query block (the off-diagonal causal part) and does the
online-softmax flash step; only the way K/V tiles are addressed differs:
  0: block index read from a list (what the pyramid kernel does), pointer loads
  1: block index = loop counter, pointer loads
  2: block index read from a list, TMA tensor-descriptor loads
Run on a GPU: python notes/kernel_variants.py
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _loop(Q, K, V, O, Kd, Vd, Idx, L, n_qb, HQ, HKV, MODE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
          D: tl.constexpr):
    qblk = n_qb - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    kvh = bh // (HQ // HKV)
    offs_m = qblk * BM + tl.arange(0, BM)
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + bh.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :])
    kb = K + kvh.to(tl.int64) * L * D
    vb = V + kvh.to(tl.int64) * L * D
    acc = tl.zeros([BM, D], dtype=tl.float32)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    n = qblk * BM // BN
    for t in range(0, n):
        if MODE == 1:
            j = t
        else:
            j = tl.load(Idx + t)
        if MODE == 2:
            k = Kd.load([kvh * L + j * BN, 0])
            v = Vd.load([kvh * L + j * BN, 0])
        else:
            cols = j * BN + offs_n
            k = tl.load(kb + cols[:, None] * D + offs_d[None, :])
            v = tl.load(vb + cols[:, None] * D + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k)) * 0.1275
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(O + bh.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :], out.to(tl.bfloat16))


def main():
    from triton.tools.tensor_descriptor import TensorDescriptor

    for L in (8192, 32768):
        HQ, HKV, D, BM, BN = 28, 4, 128, 128, 128
        q = torch.randn(HQ, L, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(HKV, L, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(HKV, L, D, device="cuda", dtype=torch.bfloat16)
        o = torch.empty_like(q)
        idx = torch.arange(L // BN, device="cuda", dtype=torch.int32)
        kd = TensorDescriptor.from_tensor(k.view(HKV * L, D), [BN, D])
        vd = TensorDescriptor.from_tensor(v.view(HKV * L, D), [BN, D])
        n_qb = L // BM
        flops = 4 * HQ * D * (L // BN) * (L // BN - 1) / 2 * BM * BN
        for mode in (0, 1, 2):
            for warps, stages in ((8, 3), (8, 4), (8, 2)):
                fn = lambda: _loop[(n_qb, HQ)](q, k, v, o, kd, vd, idx, L, n_qb, HQ, HKV, MODE=mode, BM=BM, BN=BN, D=D,
                                               num_warps=warps, num_stages=stages)
                try:
                    t = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
                    print(f"L={L} mode={mode} w{warps}s{stages}: {t:.3f} ms  {flops / t / 1e9:.0f} TFLOP/s", flush=True)
                except Exception as e:  # report and go on: a variant may not compile on this Triton
                    print(f"L={L} mode={mode} w{warps}s{stages}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)


if __name__ == "__main__":
    main()
