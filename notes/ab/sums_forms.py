"""Forms of the skipped sums' launch (tail aggregation's tail key: mean key, mean value, count per plan row), timed
alone and inside the whole tailed call of the warp-specialized kernel.

Each form is ``pyramid.SUMS_FORM``: (rows, key blocks a step, columns, warps, precision) of one program, precision
``ieee`` (float32 products) or ``tf32x3`` (three tf32 products on tensor cores). Forms with the sums in three
bfloat16 parts on tensor cores were measured from commit 019f48d, whose kernel took ``bf16x3``
(results/sums_forms.csv). For every plan it prints
the launch alone (CUDA-graph replay, GPU time only), the largest difference of its means from the shipped form's,
and the whole call (prebuilt pyramid and plan lists, ``diagonal_kept=True``) with and without tail, replayed from a
CUDA graph: the tail overhead each form leaves.

Plans: sink and diagonal only, one level 8 (no tile has a tail), random keep 0.25 and 0.1 (one plan head per
kv-head, two seeds), random keep 0.25 with one plan head per query head. Inputs: random q ``[1, 28, L, 128]``, k,
v ``[1, 4, L, 128]``, bfloat16. With ``--families``, PSA's ``videomme-0.65`` plans on video-like inputs of those
families too (one plan head per query head, long tiles: a form of few programs holds few SMs ahead of the attention
launch and may end before the first tile's tail needs it); ``--only-videomme`` leaves the others out.

Run on a Hopper GPU from the repository root: python notes/ab/sums_forms.py [--lengths 8192 32768] [--csv F]
[--families medium] [--only-videomme] [--forms R,C,W,WARPS,PRECISION ...]
"""

import argparse
import csv
import functools

import torch
import triton

from vlmsparse.bench.kernel import one_level_plan, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels import pyramid as pyramid_module

from tail_parts import graphed, videomme_cases  # notes/ab is on the path when run as a script from the root

SHIPPED = (64, 32, 64, 4, "ieee")  # the form before pyramid.sums_form
FORMS = [
    SHIPPED,
    (32, 32, 64, 4, "ieee"),
    (16, 32, 64, 2, "ieee"),
    (16, 64, 128, 4, "ieee"),
    (64, 64, 64, 4, "ieee"),  # one step a program at 8k, as few programs as the shipped form
    (64, 64, 128, 8, "ieee"),
    (64, 64, 256, 8, "ieee"),  # at 8k one program a kv-head: the fewest SMs held away from the attention launch
    (64, 32, 128, 8, "ieee"),
    (16, 64, 64, 4, "tf32x3"),
    (32, 64, 128, 4, "tf32x3"),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--csv", default="sums_forms.csv")
    p.add_argument("--forms", nargs="+", metavar="R,C,W,WARPS,PRECISION",
                   help="the forms to time (default: every form above; the shipped form is always first)")
    p.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=[], metavar="FAMILY",
                   help="also PSA's videomme-0.65 plans on video-like inputs of these families")
    p.add_argument("--only-videomme", action="store_true", help="leave out the random-input plans")
    args = p.parse_args()
    forms = FORMS if not args.forms else [SHIPPED] + [
        tuple(int(x) if x.isdigit() else x for x in f.split(",")) for f in args.forms]
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    fields = ["length", "plan", "form", "sums_us", "max_diff", "ms", "ms_tail", "tail_overhead"]
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for length in args.lengths:
            cases = []  # (label, q, k, v, levels)
            if not args.only_videomme:
                gen = torch.Generator(device="cuda").manual_seed(length)
                q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
                k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
                v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
                # one level 8: no row skips a block, so no tile has a tail; what the launch costs there is the SMs
                # it holds (a program of the shipped form cannot share an SM with the attention launch's)
                plans = {"sink and diagonal": one_level_plan(4, length, 128, 0),
                         "one level 8": one_level_plan(4, length, 128, 8)}
                for keep in (0.25, 0.1):
                    for seed in (0, 1):
                        plans[f"random keep {keep} seed {seed}"] = random_mixed_plan(1, 4, length, 128, keep,
                                                                                     seed=seed)
                plans["random keep 0.25 Hm 28"] = random_mixed_plan(1, 28, length, 128, 0.25, seed=2)
                cases += [(label, q, k, v, levels) for label, levels in plans.items()]
            cases += videomme_cases(length, args.families)
            for label, q, k, v, levels in cases:
                n = q.shape[2]  # this case's tokens (the video-like inputs' grid may differ)
                pyr = build_kv_pyramid(k, v, tail=True, block_n=128)
                levels = levels.contiguous()
                plan = compile_plan(levels, n, n, 128, 128, True)
                call = functools.partial(pyramid_attention, q, k, v, levels, pyramid=pyr, plan=plan,
                                         diagonal_kept=True, check_levels=False)
                pyramid_module.SUMS_FORM = SHIPPED
                ms = graphed(lambda: call(tail=False))
                want = pyramid_module.skipped_key_sums(levels, pyr, n, n, 128, 128, True,
                                                       means=torch.bfloat16)
                want = [t.double() for t in want]
                for form in forms:
                    pyramid_module.SUMS_FORM = form
                    try:
                        got = pyramid_module.skipped_key_sums(levels, pyr, n, n, 128, 128, True,
                                                              means=torch.bfloat16)
                        diff = max((a.double() - b).abs().max().item() for a, b in zip(got, want))
                        sums_us = 1000 * graphed(lambda: pyramid_module.skipped_key_sums(
                            levels, pyr, n, n, 128, 128, True, means=torch.bfloat16))
                        ms_tail = graphed(lambda: call(tail=True))
                    except Exception as e:  # a form that does not compile is reported, not fatal
                        print(f"L={n} {label:26s} {form}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                        continue
                    row = dict(length=n, plan=label, form=" ".join(map(str, form)), sums_us=sums_us,
                               max_diff=diff, ms=ms, ms_tail=ms_tail, tail_overhead=ms_tail / ms - 1)
                    w.writerow(row)
                    f.flush()
                    print(f"L={n} {label:26s} {row['form']:20s} sums {sums_us:6.1f} us  diff {diff:.1e}  "
                          f"call {ms:.4f} / {ms_tail:.4f} ms  tail {100 * row['tail_overhead']:+.1f}%", flush=True)
                pyramid_module.SUMS_FORM = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
