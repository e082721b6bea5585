"""The probe of notes/ab/gluon_exact.py (exact and diagonal blocks only) against the Triton kernel and cuDNN.

Plans: every block at level 1, and XAttention-like binary plans (random keep of strictly-past blocks, sink and
diagonal exact). Two input seeds per length. Variants: in-group pipelining on or off, two or three ring slots.
Prints device time (host ahead) in alternating rounds, best of the rounds, and each output's relative difference
to the Triton kernel's, to cuDNN's, and against float64 on a sample of query rows.

Run on a Hopper GPU from the repository root: python notes/ab/gluon_ab.py [lengths ...]
"""

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(__file__))
from gluon_exact import exact_ws_attention  # noqa: E402

from vlmsparse.bench.common import device_time_ms, sdpa_dense  # noqa: E402
from vlmsparse.bench.kernel import rel_err  # noqa: E402
from vlmsparse.kernels import compile_plan, plan_shape, pyramid_attention  # noqa: E402


def binary_plan(hkv, length, keep, seed):
    n = triton.cdiv(length, 128)
    g = torch.Generator(device="cuda").manual_seed(seed)
    lv = (torch.rand(1, hkv, n, n, device="cuda", generator=g) < keep).to(torch.int8)
    lv[..., 0] = 1
    lv = torch.tril(lv)
    idx = torch.arange(n, device="cuda")
    lv[..., idx, idx] = 1
    return lv.contiguous()


def sample_ref(q, k, v, levels, rows=64, seed=0):
    """float64 attention of a sample of query rows (every head) under binary causal ``levels``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    L = q.shape[2]
    r = torch.randint(0, L, (rows,), generator=g).cuda()
    hq, hkv = q.shape[1], k.shape[1]
    qs = q[0, :, r].double()
    kk = k[0].double().repeat_interleave(hq // hkv, 0)
    vv = v[0].double().repeat_interleave(hq // hkv, 0)
    s = qs @ kk.transpose(1, 2) / q.shape[-1] ** 0.5
    cols = torch.arange(L, device="cuda")
    vis = cols[None, :] <= r[:, None]
    blk = levels[0].repeat_interleave(hq // levels.shape[1], 0)[:, r // 128][..., cols // 128] > 0
    s = s.masked_fill(~(vis[None] & blk), float("-inf"))
    return s.softmax(-1) @ vv, r


def main():
    lengths = [int(a) for a in sys.argv[1:]] or [8192, 32768]
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    cudnn = sdpa_dense("cudnn")
    for length in lengths:
        for input_seed in (0, 1):
            torch.manual_seed(length + input_seed)
            q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
            ref = cudnn(q, k, v)
            plans = {"all-level-1": torch.ones(plan_shape(1, 4, length, length, 128, 128), dtype=torch.int8,
                                               device="cuda")}
            for keep in (0.5, 0.2):
                plans[f"binary keep {keep}"] = binary_plan(4, length, keep, seed=input_seed + 7)
            for name, levels in plans.items():
                plan = compile_plan(levels, length, length, 128, 128, True)
                fns = {
                    "cudnn": lambda: cudnn(q, k, v),
                    "triton": lambda: pyramid_attention(q, k, v, levels, plan=plan, check_levels=False,
                                                        pooled=False, kernel="triton"),
                }
                for ov in (False, True):
                    for nbuf in (2, 3):
                        fns[f"ws overlap={int(ov)} nbuf={nbuf}"] = (
                            lambda ov=ov, nbuf=nbuf: exact_ws_attention(q, k, v, plan, 4, overlap=ov, nbuf=nbuf))
                outs = {key: fn() for key, fn in fns.items()}
                exp64, rows = sample_ref(q, k, v, levels, seed=input_seed)
                best = {key: float("inf") for key in fns}
                for _ in range(3):
                    for key, fn in fns.items():
                        best[key] = min(best[key], device_time_ms(fn, reps=20, trials=3))
                print(f"L={length} seed {input_seed} {name}: cuDNN {best['cudnn']:.3f} ms", flush=True)
                for key in fns:
                    o = outs[key]
                    e64 = rel_err(o[0, :, rows].double(), exp64)
                    print(f"  {key:24s} {best[key]:8.3f} ms  vs cuDNN {best['cudnn'] / best[key]:.3f}  "
                          f"time vs Triton {best[key] / best['triton']:.3f}x  diff to Triton "
                          f"{rel_err(o, outs['triton']):.1e}  float64 rows {e64:.1e}  diff to cuDNN "
                          f"{rel_err(o, ref):.1e}", flush=True)


if __name__ == "__main__":
    main()
