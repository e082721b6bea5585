"""Where a sparse row's time goes: per-program fixed cost and per-block cost of each level, from whole-kernel runs.

Every query block keeps its sink block (key block 0) and the diagonal block, plus exactly N blocks of one level
at random places among the wholly visible ones (rows with fewer keep all). With the grid full, time x SMs /
programs is one program's time; the difference to the N = 0 plan, divided by N, is one block's cost.
Run on a GPU from the repository root: python notes/ab/fixed_costs.py [tag of a past version, probed instead;
notes/ab/variants.py]
"""

import sys

import torch
import triton

from vlmsparse.kernels import build_kv_pyramid, compile_plan, plan_shape, pyramid_attention
from vlmsparse.kernels.blocks import FULL, block_classes

from variants import load, package_of


def plan_with(length, block, level, n, seed=0):
    shape = plan_shape(1, 4, length, length, block, block)
    cls = block_classes(length, length, block, block, True)
    g = torch.Generator().manual_seed(seed)
    score = torch.rand(shape, generator=g)
    full = (cls == FULL).expand(shape).clone()
    full[..., 0] = False  # the sink is kept separately
    score = torch.where(full, score, torch.full_like(score, -1.0))
    levels = torch.zeros(shape, dtype=torch.int8)
    if n:
        top = score.topk(min(n, shape[-1]), dim=-1)
        chosen = torch.zeros(shape, dtype=torch.bool).scatter_(-1, top.indices, True) & (score >= 0)
        levels[chosen] = level
    levels[..., cls != FULL] = 0
    levels[..., cls == 2] = 1  # diagonal blocks
    levels[..., 0] = 1  # sink
    return levels.cuda()


def main():
    attention, build, compile_lists = pyramid_attention, build_kv_pyramid, compile_plan
    if len(sys.argv) > 1:
        module = load(sys.argv[1])
        own = package_of(module)
        attention, build, compile_lists = module.pyramid_attention, own.build_kv_pyramid, own.compile_plan
        print("kernel:", sys.argv[1])
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, "SMs", sms)
    for length in (8192, 32768):
        torch.manual_seed(0)
        q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16)
        pyr = build(k, v)
        programs = 28 * (length // 128)

        def per_program_us(levels):
            plan = compile_lists(levels, length, length, 128, 128, True)
            fn = lambda: attention(q, k, v, levels, pyramid=pyr, plan=plan, check_levels=False)
            t = triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")
            return t * 1e3 * sms / programs

        base = per_program_us(plan_with(length, 128, 1, 0))
        print(f"L={length}: {programs} programs; sink + diagonal only: {base:.2f} us per program", flush=True)
        for level in (1, 2, 4, 8):
            for n in (4, 16):
                t = per_program_us(plan_with(length, 128, level, n))
                print(f"  L={length} +{n} blocks of level {level}: {t:.2f} us per program, "
                      f"{(t - base) / n:.3f} us per block", flush=True)


if __name__ == "__main__":
    main()
