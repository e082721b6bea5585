"""Which of two kernels is right on one plan: each version's tailed output on PSA's ``videomme-0.65`` plans (the
``tail_ab.py`` inputs) against the definition (``pyramid_attention_ref``, float32 on the GPU), with the Triton
kernel (``VLMSPARSE_KERNEL=triton``) as a third opinion. Prints per version the relative L2 error, overall and of the
worst query head, and where the worst rows are (query block, the row within it).

    python notes/ab/joint_check.py kernel-exp-tail-joint-update [--length 8192] [--families peaked medium]
"""

import argparse
import functools
import os

import torch

from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels.reference import pyramid_attention_ref

from tail_parts import videomme_cases  # notes/ab is on the path when run as a script from the root
from variants import load


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("tags", nargs="*")
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--families", nargs="+", default=["peaked", "medium"])
    args = p.parse_args()
    attends = {"tree": pyramid_attention}
    for tag in args.tags:
        attends[tag] = load(tag).pyramid_attention
    for label, q, k, v, levels in videomme_cases(args.length, args.families):
        ref = pyramid_attention_ref(q, k, v, levels, tail=True, row_chunk=256, compute_dtype=torch.float32).float()
        outs = {}
        for name, attend in attends.items():
            pyr = build_kv_pyramid(k, v, tail=True, block_n=128)
            plan = compile_plan(levels, q.shape[2], k.shape[2], 128, 128, True)
            outs[name] = attend(q, k, v, levels, block_m=128, block_n=128, tail=True, pyramid=pyr, plan=plan,
                                check_levels=False, diagonal_kept=True).float()
        os.environ["VLMSPARSE_KERNEL"] = "triton"
        outs["triton kernel"] = pyramid_attention(q, k, v, levels, tail=True, diagonal_kept=True).float()
        del os.environ["VLMSPARSE_KERNEL"]
        for name, out in outs.items():
            err = (out - ref).norm(dim=-1) / ref.norm(dim=-1).clamp(min=1e-6)  # [1, H, L]
            head = [rel(out[0, h], ref[0, h]) for h in range(out.shape[1])]
            worst = err[0].flatten().topk(3)
            where = [(int(i) // err.shape[-1], (int(i) % err.shape[-1]) // 128, int(i) % 128) for i in worst.indices]
            print(f"{label:24s} {name:34s} rel {rel(out, ref):.2e}  worst head {max(head):.2e} "
                  f"(head {head.index(max(head))})  nonfinite {int((~out.isfinite()).sum())}  worst rows "
                  f"(head, qblock, row) {where} errs {[f'{x:.2e}' for x in worst.values.tolist()]}", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
