"""Run-to-run bit equality of kernel versions: a race shows as outputs that differ between identical calls.

Each version runs each plan ``--repeats`` times (with and without tail) on the same inputs; every output is compared
bit for bit with the version's first, and the first with the tree's kernel. The persistent schedule hands tiles to
programs in a different order from call to call, but a tile's arithmetic is the same wherever it runs, so a kernel
without a race gives the same bits every time. Prints one line per (length, plan, version, tail): calls that
differed, the largest relative difference among them, and the first output's difference to the tree's.

Run on a GPU from the repository root: python notes/ab/repeat_check.py [tags or commits ...] [--lengths ...]
"""

import argparse
import sys

import torch

from vlmsparse.bench.kernel import one_level_plan, random_mixed_plan

from tail_ab import binary_kwargs, versions
from tail_parts import seeded_qkv


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("tags", nargs="*")
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    vers = versions(args.tags, diagonal_passes=False)  # each version's own pyramid, plan lists and launcher
    bad = 0
    for length in args.lengths:
        q, k, v = seeded_qkv(length)
        plans = {"one level 0": (one_level_plan(4, length, 128, 0), True),
                 "one level 1": (one_level_plan(4, length, 128, 1), True),
                 "one level 8": (one_level_plan(4, length, 128, 8), False),
                 "random keep 0.1": (random_mixed_plan(1, 4, length, 128, 0.1, seed=0), False)}
        for label, (levels, binary) in plans.items():
            first = {}
            for name, (build, compile_, attend) in vers.items():
                plan = compile_(levels, q.shape[2], k.shape[2], 128, 128, True)
                kw = binary_kwargs(attend, binary)
                for tail in (False, True):
                    pyr = build(k, v, tail=tail, block_n=128)
                    outs = [attend(q, k, v, levels, block_m=128, block_n=128, tail=tail, pyramid=pyr, plan=plan,
                                   check_levels=False, **kw).clone() for _ in range(args.repeats)]
                    torch.cuda.synchronize()
                    differ = [i for i, o in enumerate(outs) if not torch.equal(o, outs[0])]
                    worst = max((rel(outs[i], outs[0]) for i in differ), default=0.0)
                    vs_tree = rel(outs[0], first[tail]) if tail in first else 0.0
                    if name == "current":
                        first[tail] = outs[0]
                    bad += len(differ)
                    print(f"L={length} {label:16s} {name:28s} tail={tail!s:5s} differing calls {len(differ):3d} of "
                          f"{args.repeats}  largest {worst:.1e}  first vs tree {vs_tree:.1e}", flush=True)
                    del outs
    print(f"calls that differed from their version's first: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
