"""One attention call for Nsight Compute: where the warp-specialized kernel's warps stall, per SASS instruction.

Runs ``--warmup`` calls of one plan (prebuilt pyramid and plan lists), synchronises, then one more call: profile
that last launch of the attention kernel with ``ncu --launch-skip WARMUP --launch-count 1`` (``ncu_profile.sh``
beside this file does, for a list of configurations, and exports the per-instruction stall samples as CSV).

Plans (``--plan``): ``level1`` ... ``level8`` (sink and diagonal exact, every other visible block at that level),
``sinkdiag`` (only those), ``random25`` / ``random10`` (a random mix keeping 25 / 10% of blocks, seed 0). ``--tail``
aggregates the skipped keys; ``--sums-given`` computes the tail's sums once (in the first warm-up), so the profiled call
launches the tail-compiled kernel alone. ``--version TAG`` runs a past or experimental kernels package
(notes/ab/variants.py) instead of the tree's.

    python notes/ab/ncu_profile.py --plan level8 --length 8192 [--tail] [--version kernel-exp-span-bias-mma]

Without a GPU (``TRITON_INTERPRET=1``, a short ``--length``) it runs the Triton kernel in the interpreter: a check
of the script, not a profile.
"""

import argparse
import functools
import inspect
import os

import torch

from vlmsparse.bench.kernel import one_level_plan, random_mixed_plan
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels import pyramid as pyramid_module

#: plan name -> the level of every visible block but sink and diagonal (one-level plans), or the kept share (random)
ONE_LEVEL = {"sinkdiag": 0, "level1": 1, "level2": 2, "level4": 4, "level8": 8}
RANDOM = {"random25": 0.25, "random10": 0.1}
PLANS = sorted(ONE_LEVEL) + sorted(RANDOM)


def plan_levels(name, length, device):
    if name in ONE_LEVEL:
        return one_level_plan(4, length, 128, ONE_LEVEL[name], device)
    return random_mixed_plan(1, 4, length, 128, RANDOM[name], seed=0, device=device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", choices=PLANS, required=True)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--tail", action="store_true")
    ap.add_argument("--sums-given", action="store_true", help="with --tail: the skipped sums computed beforehand")
    ap.add_argument("--version", help="a tag or commit materialised by notes/ab/variants.py (default: the tree)")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if args.sums_given and not args.tail:
        ap.error("--sums-given goes with --tail")
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if not torch.cuda.is_available() and not interpret:
        ap.error("needs a CUDA GPU (or TRITON_INTERPRET=1 and a short --length, to check the script)")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    build, compile_, attend, pyr_mod = build_kv_pyramid, compile_plan, pyramid_attention, pyramid_module
    if args.version:
        from variants import load, package_of  # notes/ab is on the path when run as a script from the root

        pyr_mod = load(args.version)
        own = package_of(pyr_mod)
        build, compile_, attend = own.build_kv_pyramid, own.compile_plan, pyr_mod.pyramid_attention
    if "diagonal_kept" in inspect.signature(attend).parameters:
        attend = functools.partial(attend, diagonal_kept=True)
    gen = torch.Generator(device=dev).manual_seed(args.length)
    q = torch.randn(1, 28, args.length, 128, device=dev, dtype=dtype, generator=gen)
    k = torch.randn(1, 4, args.length, 128, device=dev, dtype=dtype, generator=gen)
    v = torch.randn(1, 4, args.length, 128, device=dev, dtype=dtype, generator=gen)
    levels = plan_levels(args.plan, args.length, dev)
    plan = compile_(levels, args.length, args.length, 128, 128, True)
    pyr = build(k, v, tail=args.tail, block_n=128)
    if args.sums_given:  # computed in the first warm-up call, reused by the profiled one
        from variants import precomputed_sums

        precomputed_sums(pyr_mod)

    def call():
        return attend(q, k, v, levels, block_m=128, block_n=128, tail=args.tail, pyramid=pyr, plan=plan,
                      check_levels=False)

    for _ in range(args.warmup):
        call()
    if dev == "cuda":
        torch.cuda.synchronize()
    out = call()
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"{args.plan} L={args.length} tail={args.tail} sums_given={args.sums_given} "
          f"version={args.version or 'tree'}: |out| = {out.float().norm().item():.4g}", flush=True)


if __name__ == "__main__":
    main()
