"""Tile shape and programs per SM: the same attention run with other query/key tile sizes.

A plan of 128 x 128 blocks is the same attention as the plan with every block split into 64 x 64 quarters at the
same level (pooled groups are aligned to key positions, not to blocks; the tail is the mean of the same skipped
keys). With 64 x 64 tiles and 4 warps a program needs about 116 KB of shared memory at three stages (83 KB at two),
so two programs can share an SM and one's softmax overlaps the other's matmuls, where a 128-row program with 8
warps holds the SM alone and its two warp groups meet at a block-wide barrier several times per key block.

Prints, per length, cuDNN and each (block_m, block_n, warps, stages) on the all-level-1 plan (binary and pooled
kernels) and on random mixed plans, as device time (host ahead) in alternating rounds, best of the rounds, with
the output difference against the default tiles, and the compiled kernels' registers and shared memory.

Run on a GPU from the repository root: python notes/ab/tile_probe.py [lengths ...]
"""

import sys

import torch
import triton

from vlmsparse.bench.common import device_time_ms, sdpa_dense
from vlmsparse.bench.kernel import random_mixed_plan, rel_err
from vlmsparse.kernels import build_kv_pyramid, compile_plan, plan_shape, pyramid_attention
from vlmsparse.kernels import pyramid as pyramid_module

CONFIGS = [(128, 128, 8, 3), (64, 64, 4, 3), (64, 64, 4, 2), (128, 64, 8, 3), (64, 128, 4, 2)]


def split_plan(levels: torch.Tensor, lq: int, lk: int, bm: int, bn: int) -> torch.Tensor:
    """The 128 x 128 plan ``levels`` as a plan of ``bm`` x ``bn`` blocks (each block repeated, cut to size)."""
    out = levels.repeat_interleave(128 // bm, dim=2).repeat_interleave(128 // bn, dim=3)
    return out[:, :, : triton.cdiv(lq, bm), : triton.cdiv(lk, bn)].contiguous()


def kernels_seen():
    seen = []
    for cache in pyramid_module._pyramid_attention_fwd.device_caches.values():
        for kern in cache[0].values():
            c = kern.metadata
            seen.append((c.num_warps, c.num_stages, kern.n_regs, kern.n_spills, c.shared))
    return seen


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
            if input_seed == 0:
                for keep in (0.5, 0.25):
                    plans[f"random keep {keep}"] = random_mixed_plan(1, 4, length, 128, keep, seed=input_seed)
            for name, levels in plans.items():
                pooled_opts = (False, True) if name == "all-level-1" else (True,)
                fns = {"cudnn": lambda: cudnn(q, k, v)}
                outs = {}
                for bm, bn, w, s in CONFIGS:
                    lv = split_plan(levels, length, length, bm, bn)
                    for pooled in pooled_opts:
                        pyr = build_kv_pyramid(k, v, block_n=bn) if pooled else None
                        plan = compile_plan(lv, length, length, bm, bn, True)
                        fn = (lambda lv=lv, pyr=pyr, plan=plan, bm=bm, bn=bn, w=w, s=s, pooled=pooled:
                              pyramid_attention(q, k, v, lv, pyramid=pyr, plan=plan, check_levels=False, block_m=bm,
                                                block_n=bn, num_warps=w, num_stages=s, pooled=pooled))
                        key = f"{bm}x{bn} w{w} s{s}" + (" pooled" if pooled else " binary")
                        outs[key] = fn()
                        fns[key] = fn
                base_key = next(iter(outs))
                best = {key: float("inf") for key in fns}
                for _ in range(3):
                    for key, fn in fns.items():
                        best[key] = min(best[key], device_time_ms(fn, reps=20, trials=3))
                print(f"L={length} seed {input_seed} {name}: cuDNN {best['cudnn']:.3f} ms", flush=True)
                for key in outs:
                    err_ref = rel_err(outs[key], ref) if name == "all-level-1" else float("nan")
                    print(f"  {key:24s} {best[key]:8.3f} ms  vs cuDNN {best['cudnn'] / best[key]:.3f}  "
                          f"vs {base_key} {best[key] / best[base_key]:.3f}x time  "
                          f"diff to default tiles {rel_err(outs[key], outs[base_key]):.1e}  vs cuDNN out {err_ref:.1e}",
                          flush=True)
    print("compiled (warps, stages, regs, spills, shared):", sorted(set(kernels_seen())), flush=True)


if __name__ == "__main__":
    main()
