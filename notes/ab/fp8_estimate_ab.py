"""Same-run A/B of the antidiagonal estimate in float8 (``estimate_dtype="fp8"``: e4m3 with one scale per group
of ``stride`` rows) against bfloat16: the estimate's time, the planners' device time (host ahead,
``device_time_ms``) as a share of dense, and what the plans lose: sparsity, relative L2 error of the output
against dense, recall-free agreement (share of visible blocks given the same level).

Also checks on the GPU that the quantising launch equals its PyTorch definition bit for bit and that the float8
estimate equals its PyTorch definition.
Run on a GPU from the repository root: python notes/ab/fp8_estimate_ab.py [lengths]
"""

import sys

import torch
import triton

from vlmsparse.bench.common import device_time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels.antidiagonal import (
    antidiagonal_block_scores, antidiagonal_block_scores_triton, quantize_groups, quantize_groups_torch,
)
from vlmsparse.methods import get_method


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median")


def checks():
    torch.manual_seed(0)
    x = (torch.randn(1, 1000, 4, 128, device="cuda") * 3).to(torch.bfloat16).transpose(1, 2)
    for stride in (8, 16):
        a8, a = quantize_groups(x, stride)
        b8, b = quantize_groups_torch(x, stride)
        diff = a8.view(torch.uint8) != b8.view(torch.uint8)
        print(f"check stride {stride}: scales equal {torch.equal(a, b)} (max ratio {(a / b).max().item()}, min "
              f"{(a / b).min().item()}); float8 bytes differing {int(diff.sum())} of {diff.numel()}", flush=True)
        if diff.any():
            i = tuple(diff.nonzero()[0].tolist())
            g = (i[0], i[1], i[2] // stride)
            print(f"   e.g. x {x[i].item()} scale {a[g].item()} / {b[g].item()} -> {a8[i].float().item()} vs "
                  f"{b8[i].float().item()}", flush=True)
    q = torch.randn(1, 28, 2000, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 4, 2000, 128, device="cuda", dtype=torch.bfloat16)
    for stride in (8, 16):
        kw = dict(stride=stride, block_m=128, block_n=128)
        got = antidiagonal_block_scores_triton(q, k, fp8=True, **kw)
        want = antidiagonal_block_scores(q, k, use_triton=False, estimate_dtype="fp8", **kw)
        print(f"check stride {stride}: float8 estimate vs its definition max diff "
              f"{(got - want).abs().max().item():.2e}", flush=True)


def main():
    lengths = [int(x) for x in sys.argv[1:]] or [8192, 16384, 32768]
    print(torch.cuda.get_device_name(), "triton", triton.__version__, flush=True)
    checks()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for length in lengths:
        frames, height, width = VIDEO_GRIDS[length]
        for family in ("diffuse", "medium", "peaked"):
            for seed in (0, 1):
                q, k, v, visual = video_qkv(frames, height, width, device="cuda", dtype=torch.bfloat16,
                                            seed=1000 * seed + length, **FAMILIES[family])
                dense_out = sdpa(q, k, v, is_causal=True, enable_gqa=True)
                dense = t_ms(lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True))
                if family == "diffuse" and seed == 0:
                    for stride in (8, 16):
                        e = {dt: t_ms(lambda: antidiagonal_block_scores(q, k, stride=stride, block_m=128, block_n=128,
                                                                         estimate_dtype=dt))
                             for dt in ("bfloat16", "fp8", "bfloat16")}
                        print(f"L={q.shape[2]} estimate stride {stride}: bf16 {e['bfloat16']:.3f} ms fp8 {e['fp8']:.3f} ms "
                              f"({e['fp8'] / e['bfloat16']:.2f}x); dense {dense:.3f} ms", flush=True)
                for name in ("psa", "xattention"):
                    res = {}
                    for dt in ("bfloat16", "fp8"):
                        method = get_method(name, estimate_dtype=dt)
                        plan = method.plan(q, k, visual)
                        out = plan.run(q, k, v)
                        err = float((out.double() - dense_out.double()).norm() / dense_out.double().norm())
                        res[dt] = (plan, err, device_time_ms(lambda: method.plan(q, k, visual)))
                    (p0, e0, t0), (p1, e1, t1) = res["bfloat16"], res["fp8"]
                    vis = p0.levels >= 0
                    same = float((p0.levels == p1.levels).float().mean())
                    print(f"L={q.shape[2]} {family} s{seed} {name}: plan device bf16 {t0:.3f} ms ({t0 / dense:.1%}) fp8 "
                          f"{t1:.3f} ms ({t1 / dense:.1%}) | sparsity {p0.sparsity().overall:.3f} -> "
                          f"{p1.sparsity().overall:.3f} | err {e0:.4f} -> {e1:.4f} | same level {same:.4f}", flush=True)
                del q, k, v, dense_out
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
