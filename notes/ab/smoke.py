"""One kernel version's smoke run on a GPU, in a process of its own: a few plans once each, with and without tail,
against the tree's kernel. A version that hangs is cut by the caller's timeout (``gpu_try.sh --smoke``) and left out
of the A/B that follows, instead of stopping it for every version.

Plans at 8k (q [1, 28, L, 128], k and v [1, 4, L, 128], bfloat16, seeded by the length): every block exact (wide
steps), one level 8 (spans), random keep 0.1 (single pooled blocks, masked blocks, the tail), sink and diagonal
(the tail beside a lone masked block). Prints one line per (plan, tail): finite, and the relative difference to the
tree's output; exits 1 if an output is not finite or differs from the tree's by more than ``--tol``.

    python notes/ab/smoke.py VERSION [--length 8192] [--tol 0.02]   # from the repository root, PYTHONPATH=.:notes/ab
"""

import argparse
import sys

import torch

from vlmsparse.bench.kernel import one_level_plan, random_mixed_plan

from repeat_check import rel
from tail_ab import binary_kwargs, versions
from tail_parts import seeded_qkv


def main():
    p = argparse.ArgumentParser()
    p.add_argument("version")
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--tol", type=float, default=0.02)
    args = p.parse_args()
    vers = versions([args.version], diagonal_passes=False)
    q, k, v = seeded_qkv(args.length)
    L = args.length
    plans = {"every block exact": (one_level_plan(4, L, 128, 1), True),
             "one level 8": (one_level_plan(4, L, 128, 8), False),
             "random keep 0.1": (random_mixed_plan(1, 4, L, 128, 0.1, seed=0), False),
             "sink and diagonal": (one_level_plan(4, L, 128, 0), True)}
    bad = 0
    for label, (levels, binary) in plans.items():
        outs = {}
        for name, (build, compile_, attend) in vers.items():
            plan = compile_(levels, L, L, 128, 128, True)
            for tail in (False, True):
                pyr = build(k, v, tail=tail, block_n=128)
                outs[name, tail] = attend(q, k, v, levels, block_m=128, block_n=128, tail=tail, pyramid=pyr, plan=plan,
                                          check_levels=False, **binary_kwargs(attend, binary))
                torch.cuda.synchronize()
        for tail in (False, True):
            out = outs[args.version, tail]
            finite = bool(torch.isfinite(out).all())
            diff = rel(out, outs["current", tail])
            ok = finite and diff <= args.tol
            bad += not ok
            print(f"{args.version} {label:18s} tail={tail!s:5s} finite={finite} vs tree {diff:.1e}"
                  f"{'' if ok else '  FAILED'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
