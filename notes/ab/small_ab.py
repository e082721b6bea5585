"""Repeated same-run A/B on small, sparse plans (8k tokens), where one call lasts 0.2-0.7 ms and run-to-run
noise is largest: the current kernel against past versions from git tags (notes/ab/variants.py), alternating,
five rounds each. Also prints the host time of one call (launches enqueued back to back: if it nears the GPU
time, the timing is host-bound) and what each compiled kernel holds per program (shared memory, registers,
spills).

Run on a GPU from the repository root: python notes/ab/small_ab.py [tags, default kernel-v7]
"""

import sys
import time

import torch
import triton

from vlmsparse.bench.kernel import random_mixed_plan
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels import pyramid as current_module

from variants import load, package_of, resources


def host_us(fn, calls=200):
    """Host microseconds per call, the calls enqueued back to back (the GPU queue does not fill at 200)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def main(names):
    others = {name: load(name) for name in names}
    length = 8192
    q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
    for keep in (0.5, 0.25, 0.1):
        levels = random_mixed_plan(1, 4, length, 128, keep, seed=length)
        kw = dict(check_levels=False, block_m=128, block_n=128)
        pyr, plan = build_kv_pyramid(k, v), compile_plan(levels, length, length, 128, 128, True)
        fns = {"current": lambda: pyramid_attention(q, k, v, levels, pyramid=pyr, plan=plan, **kw)}
        for name, module in others.items():
            own = package_of(module)
            own_pyr, own_plan = own.build_kv_pyramid(k, v), own.compile_plan(levels, length, length, 128, 128, True)
            fns[name] = lambda module=module, p=own_pyr, c=own_plan: module.pyramid_attention(
                q, k, v, levels, pyramid=p, plan=c, **kw)
        times = {key: [] for key in fns}
        for _ in range(5):
            for key, fn in fns.items():
                times[key].append(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        base = sorted(times["current"])[2]
        for key, ts in times.items():
            host = sorted(host_us(fns[key]) for _ in range(3))[1]
            print(f"L={length} random keep {keep}: {key:28s} {' '.join(f'{t:.3f}' for t in ts)} ms; "
                  f"median / current {sorted(ts)[2] / base:.3f}; host {host:.0f} us per call", flush=True)
    for key, module in [("current", current_module)] + list(others.items()):
        print(f"{key}: (warps, shared bytes, registers, spills) per specialisation: "
              f"{resources(module._pyramid_attention_fwd)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["kernel-v7"])
