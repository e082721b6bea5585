"""Repeated same-run A/B on small, sparse plans (8k tokens), where one call lasts 0.2-0.7 ms and run-to-run
noise is largest: the current kernel against kernel files in this folder, alternating, five rounds each. Also
prints the host time of one call (launches enqueued back to back: if it nears the GPU time, the timing is
host-bound) and what each compiled kernel holds per program (shared memory, registers, spills).

Run on a GPU from the repository root: python notes/ab/small_ab.py [files in notes/ab, default pyramid_v7.py]
"""

import sys
import time

import torch
import triton

from vlmsparse.bench.kernel import random_mixed_plan
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels import pyramid as current_module

from variant_files import load


def compiled_resources(module):
    """(shared bytes, registers, spills) of each compiled specialisation of the module's forward kernel."""
    out = []
    caches = getattr(module._pyramid_attention_fwd, "device_caches", {})
    for entry in caches.values():
        for kernel in entry[0].values():
            kernel._init_handles()
            out.append((kernel.metadata.shared, kernel.n_regs, kernel.n_spills))
    return out


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
        pyr = build_kv_pyramid(k, v)
        plan = compile_plan(levels, length, length, 128, 128, True)
        kw = dict(pyramid=pyr, plan=plan, check_levels=False, block_m=128, block_n=128)
        fns = {"current": lambda: pyramid_attention(q, k, v, levels, **kw)}
        for name, module in others.items():
            fns[name] = lambda module=module: module.pyramid_attention(q, k, v, levels, **kw)
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
        print(f"{key}: (shared bytes, registers, spills) per specialisation: {compiled_resources(module)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["pyramid_v7.py"])
