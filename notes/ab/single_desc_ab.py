"""Same-run A/B of single pooled blocks (those not in a span) read through tensor descriptors of their own tile
height against pointer loads (``vlmsparse.kernels.pyramid.SINGLE_BLOCK_DESCRIPTORS``).

Kernel time (the pyramid and the compiled plan built outside the timing) for planners' plans on video-like inputs
of three families and two seeds, for plans of isolated pooled blocks (every other wholly visible block at one
level, the rest skipped, sink and diagonal exact), for the all-level-1 plan and for a plan of sink and diagonal
only (the whole call, host included: six more descriptors per call); each output's relative L2 error against
SDPA, and the largest difference between the two variants' outputs.
Run on a GPU from the repository root: python notes/ab/single_desc_ab.py
"""

import argparse

import torch
import triton

import vlmsparse.kernels.pyramid as pyr
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.methods import get_method

PLANS = {
    "psa default": dict(),
    "psa all-levels": dict(lone_level2_exact=False),
    "psa-exact 0.8": dict(thresholds=(0.8, 0.8, 0.88, 0.94), stride=16),
    "psa-exact 0.6": dict(thresholds=(0.6, 0.6, 0.76, 0.88), stride=16),
    "psa-all-levels 0.6": dict(thresholds=(0.6, 0.75, 0.85, 0.95), lone_level2_exact=False),
}


def bench(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median")


def isolated(levels_shape, p, device):
    """Every other wholly visible block at level ``p`` (others skipped), first key block and diagonal exact."""
    b, h, nq, nk = levels_shape
    lv = torch.zeros(levels_shape, dtype=torch.int8, device=device)
    for i in range(nq):
        lv[:, :, i, 1:i:2] = p
        lv[:, :, i, 0] = 1
        lv[:, :, i, i] = 1
    return lv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), "triton", triton.__version__, flush=True)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for length in args.lengths:
        frames, height, width = VIDEO_GRIDS.get(length, (max(1, length // 256), 16, 16))
        for family in ("diffuse", "medium", "peaked"):
            for seed in args.seeds:
                q, k, v, visual = video_qkv(frames, height, width, device="cuda", dtype=torch.bfloat16,
                                            seed=1000 * seed + length, **FAMILIES[family])
                dense = sdpa(q, k, v, is_causal=True, enable_gqa=True).double()
                t_dense = bench(lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True))
                cases = {name: get_method("psa", **kw).plan(q, k, visual).levels for name, kw in PLANS.items()}
                first = family == "medium" and seed == args.seeds[0]
                if first:
                    n = -(-q.shape[2] // 128)
                    shape = (1, 28, n, n)
                    for p in (2, 4, 8):
                        cases[f"isolated level {p}"] = isolated(shape, p, q.device)
                    cases["all level 1"] = torch.tril(torch.ones(shape[2:], dtype=torch.int8, device=q.device)).expand(shape).contiguous()
                    cases["sink + diagonal"] = isolated(shape, 0, q.device)
                pyramid = build_kv_pyramid(k, v)
                for name, levels in cases.items():
                    plan = compile_plan(levels, q.shape[2], k.shape[2], 128, 128, True)
                    res, outs = {}, {}
                    for flag in (False, True):
                        pyr.SINGLE_BLOCK_DESCRIPTORS = flag
                        out = pyramid_attention(q, k, v, levels, pyramid=pyramid, plan=plan, check_levels=False)
                        outs[flag] = out
                        err = float((out.double() - dense).norm() / dense.norm())
                        res[flag] = (bench(lambda: pyramid_attention(q, k, v, levels, pyramid=pyramid, plan=plan,
                                                                     check_levels=False)), err)
                    # second round, the other order: drift between the two measurements shows here
                    for flag in (True, False):
                        pyr.SINGLE_BLOCK_DESCRIPTORS = flag
                        t = bench(lambda: pyramid_attention(q, k, v, levels, pyramid=pyramid, plan=plan,
                                                            check_levels=False))
                        res[flag] = (min(res[flag][0], t), res[flag][1])
                    pyr.SINGLE_BLOCK_DESCRIPTORS = True
                    (t0, e0), (t1, e1) = res[False], res[True]
                    diff = float((outs[True].float() - outs[False].float()).abs().max())
                    kept = float((levels > 0).float().mean())
                    print(f"L={q.shape[2]} {family} s{seed} {name:20s} dense {t_dense:.3f} ms | pointers "
                          f"{t0:.3f} ms err {e0:.4f} | descriptors {t1:.3f} ms err {e1:.4f} | ratio {t1 / t0:.3f} "
                          f"| max diff {diff:.1e} | kept blocks {kept:.3f}", flush=True)
                del q, k, v, dense, pyramid
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
