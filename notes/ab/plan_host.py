"""Host time of planning (CUDA): how long the Python side of ``method.plan`` and ``plan.run`` takes per call, and
which stage it goes to, at one length, for PSA's default and XAttention's.

Run from the repository root on a GPU machine: ``python notes/ab/plan_host.py [--length 8192] [--calls 200]``.
The GPU is kept busy first, so the host never waits for it: the figures are host time alone, what an eager call
from an idle GPU pays before its kernels can start.
"""
from __future__ import annotations

import argparse
import collections
import functools
import time

import torch


def wrap(module, name, acc):
    fn = getattr(module, name)

    @functools.wraps(fn)
    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[name] += time.perf_counter() - t0

    setattr(module, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--family", default="medium")
    args = ap.parse_args()
    import vlmsparse.kernels as kernels_pkg
    import vlmsparse.methods.base as base
    import vlmsparse.methods.psa as psa_mod
    import vlmsparse.methods.xattention as xa_mod
    from vlmsparse.bench.kernel import VIDEO_GRIDS
    from vlmsparse.bench.pareto import FAMILIES
    from vlmsparse.bench.synthetic import video_qkv
    from vlmsparse.methods import get_method

    frames, h, w = VIDEO_GRIDS.get(args.length, (args.length // 256, 16, 16))
    q, k, v, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16, seed=args.length,
                                **FAMILIES[args.family])
    acc: dict[str, float] = collections.Counter()
    for mod in (psa_mod, xa_mod):
        for name in ("antidiagonal_block_scores", "cumulative_levels", "group_heads"):
            if hasattr(mod, name):
                wrap(mod, name, acc)
    wrap(base, "compile_plan", acc)
    wrap(kernels_pkg, "pyramid_attention", acc)
    big = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    print(f"L={q.shape[2]} family={args.family} calls={args.calls}; host microseconds per call")
    for name in ("psa", "xattention"):
        method = get_method(name)
        for _ in range(5):
            method.plan(q, k, visual).run(q, k, v)
        torch.cuda.synchronize()
        for what in ("plan", "plan+run"):
            acc.clear()
            for _ in range(100):  # a queue of matmuls the calls below cannot catch up with
                big @ big
            t0 = time.perf_counter()
            for _ in range(args.calls):
                p = method.plan(q, k, visual)
                if what == "plan+run":
                    p.run(q, k, v)
            host = (time.perf_counter() - t0) / args.calls * 1e6
            torch.cuda.synchronize()
            parts = ", ".join(f"{n} {t / args.calls * 1e6:.0f}" for n, t in sorted(acc.items(), key=lambda x: -x[1]))
            print(f"{name:10s} {what:8s} {host:7.1f} us  ({parts})", flush=True)


if __name__ == "__main__":
    main()
