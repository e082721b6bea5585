"""Does Triton's warp specialisation help the exact-block loop on Hopper?

A micro-benchmark of the exact-block loop alone (each program walks the key blocks strictly before its query block,
block index read from a list, online-softmax flash step), in these forms:
  ptr:      pointer loads, plain range (what the pyramid kernel does)
  tma:      tensor-descriptor loads, plain range
  tma_ws:   tensor-descriptor loads, tl.range(..., warp_specialize=True)
  ptr_ws:   pointer loads, tl.range(..., warp_specialize=True)
Each is checked against the `ptr` output and timed; a form that does not compile is reported and skipped.
Run on a GPU: python notes/ws_probe.py
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _loop(Q, K, V, O, Kd, Vd, Idx, L, n_qb, HQ, HKV, TMA: tl.constexpr, WS: tl.constexpr, STAGES: tl.constexpr,
          BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
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
    for t in tl.range(0, n, num_stages=STAGES, warp_specialize=WS):
        j = tl.load(Idx + t)
        if TMA:
            k = Kd.load([kvh * L + j * BN, 0])
            v = Vd.load([kvh * L + j * BN, 0])
        else:
            cols = j * BN + offs_n
            k = tl.load(kb + cols[:, None] * D + offs_d[None, :])
            v = tl.load(vb + cols[:, None] * D + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * 0.1275)
        p = tl.math.exp2(qk * 0.1275 - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(O + bh.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :], out.to(tl.bfloat16))


def main():
    from triton.tools.tensor_descriptor import TensorDescriptor

    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}", flush=True)
    for L in (8192, 32768):
        HQ, HKV, D, BM, BN = 28, 4, 128, 128, 128
        q = torch.randn(HQ, L, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(HKV, L, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(HKV, L, D, device="cuda", dtype=torch.bfloat16)
        idx = torch.randperm(L // BN, device="cuda").to(torch.int32)  # any order: the loop is order-free
        kd = TensorDescriptor.from_tensor(k.view(HKV * L, D), [BN, D])
        vd = TensorDescriptor.from_tensor(v.view(HKV * L, D), [BN, D])
        n_qb = L // BM
        flops = 4 * HQ * D * (L // BN) * (L // BN - 1) / 2 * BM * BN
        ref = None
        forms = [("ptr", 0, 0, 8, 3), ("ptr", 0, 0, 8, 2), ("tma", 1, 0, 8, 3),
                 ("tma_ws", 1, 1, 4, 2), ("tma_ws", 1, 1, 4, 3), ("tma_ws", 1, 1, 8, 2), ("tma_ws", 1, 1, 8, 3),
                 ("ptr_ws", 0, 1, 8, 3)]
        for name, tma, ws, warps, stages in forms:
            o = torch.zeros_like(q)
            fn = lambda: _loop[(n_qb, HQ)](q, k, v, o, kd, vd, idx, L, n_qb, HQ, HKV, TMA=tma, WS=ws, STAGES=stages,
                                           BM=BM, BN=BN, D=D, num_warps=warps, num_stages=stages)
            tag = f"L={L} {name:7s} w{warps}s{stages}"
            try:
                fn()
                torch.cuda.synchronize()
                if ref is None:
                    ref = o.clone()
                err = (o.float() - ref.float()).abs().max().item()
                t = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
                print(f"{tag}: {t:.3f} ms  {flops / t / 1e9:.0f} TFLOP/s  max|diff| {err:.2e}", flush=True)
            except Exception as e:  # report and go on: a form may not compile on this Triton
                print(f"{tag}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)


if __name__ == "__main__":
    main()
