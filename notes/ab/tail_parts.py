"""Where tail aggregation's time goes: the skipped-sums launch, the tail inside the kernel, and the host.

For each plan, times the whole call with and without ``tail=True`` twice: as called (``do_bench``, which
flushes L2 before each call, so host work beyond that flush's time shows up) and replayed from a CUDA graph
(GPU time only). Under the graph it also times the tailed call with its launches unchained (no programmatic
dependent launch), the call with the skipped sums precomputed (the kernel's own tail cost) and the skipped-sums
launch alone.

Under the graph it also times the tailed call with the sums given and unchained (the tail-compiled kernel alone) and
the kernel compiled without tail but launched chained (its wait alone).

With ``--families``, PSA's ``videomme-0.65`` plans on video-like inputs of those families (one plan head per query
head, the sums' launch in its 64-row form) are timed too, on their own inputs.

Run on a GPU from the repository root: python notes/ab/tail_parts.py [--lengths 8192 32768] [--families medium]
[--only-videomme]
"""

import argparse
import math

import torch
import triton

from vlmsparse.bench.kernel import VIDEO_GRIDS, one_level_plan, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels import pdl
from vlmsparse.kernels import pyramid as pyramid_module
from vlmsparse.kernels import pyramid_ws as ws_module
from vlmsparse.methods import get_method

from variants import precomputed_sums  # notes/ab is on the path when run as a script from the root


def seeded_qkv(length):
    """Random q ``[1, 28, L, 128]``, k and v ``[1, 4, L, 128]`` in bfloat16 on the GPU, seeded by the length (the inputs
    of the A/B scripts here)."""
    gen = torch.Generator(device="cuda").manual_seed(length)
    q = torch.randn(1, 28, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, 4, length, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    return q, k, v


def videomme_cases(length, families):
    """PSA's ``videomme-0.65`` plans on video-like inputs (the bench's grid for ``length``, seed ``length + 11``, one
    input per family): ``[(label, q, k, v, levels)]``, q ``[1, 28, L', 128]`` and one plan head per query head."""
    frames, h, w = VIDEO_GRIDS[length]
    cases = []
    for family in families:
        q, k, v, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16, seed=length + 11,
                                    **FAMILIES[family])
        cases.append((f"videomme-0.65 {family}", q, k, v,
                      get_method("psa", preset="videomme-0.65").plan(q, k, visual).levels))
    return cases


def bench(fn):
    return min(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median") for _ in range(2))


def graphed(fn):
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return bench(g.replay)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=[], metavar="FAMILY",
                   help="also PSA's videomme-0.65 plans on video-like inputs of these families")
    p.add_argument("--only-videomme", action="store_true", help="leave out the synthetic plans")
    args = p.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    for length in args.lengths:
        cases = []  # (label, q, k, v, levels)
        if not args.only_videomme:
            q, k, v = seeded_qkv(length)
            plans = {"sink and diagonal": one_level_plan(4, length, 128, 0),
                     "one level 4": one_level_plan(4, length, 128, 4), "one level 8": one_level_plan(4, length, 128, 8),
                     "random keep 0.25": random_mixed_plan(1, 4, length, 128, 0.25, seed=0),
                     "random keep 0.1": random_mixed_plan(1, 4, length, 128, 0.1, seed=0)}
            cases += [(label, q, k, v, levels) for label, levels in plans.items()]
        cases += videomme_cases(length, args.families)
        for label, q, k, v, levels in cases:
            n = q.shape[2]  # this case's tokens (the video-like inputs' grid may differ)
            pyr = build_kv_pyramid(k, v, tail=True, block_n=128)
            plan = compile_plan(levels, n, n, 128, 128, True)

            def call(tail):
                return lambda: pyramid_attention(q, k, v, levels, tail=tail, pyramid=pyr, plan=plan, check_levels=False,
                                                 diagonal_kept=True)

            t = {"plain": bench(call(False)), "plain tail": bench(call(True)),
                 "graph": graphed(call(False)), "graph tail": graphed(call(True)),
                 "sums launch": graphed(lambda: pyramid_module.skipped_key_sums(
                     levels, pyr, n, n, 128, 128, True,
                     means=q.dtype if ws_module.ws_supported(q, k, v, 128, 128, False) else None))}
            pdl.ENABLED = False
            try:
                t["graph tail, unchained"] = graphed(call(True))
            finally:
                pdl.ENABLED = True
            original = precomputed_sums(pyramid_module)  # in whatever form the launcher asks for them
            try:
                t["graph tail, sums given"] = graphed(call(True))
                pdl.ENABLED = False
                try:  # the tail-compiled kernel alone, launched unchained: its code without the chained wait
                    t["graph tail, sums given, unchained"] = graphed(call(True))
                finally:
                    pdl.ENABLED = True
            finally:
                pyramid_module.skipped_key_sums = original
            if ws_module.ws_supported(q, k, v, 128, 128, False):
                # the kernel compiled without tail, launched chained (its wait before the masked blocks), with the
                # call's default scale, as pyramid_attention passes it
                out = torch.empty_like(q)
                scale_log2 = pyramid_module.LOG2E / math.sqrt(q.shape[-1])
                t["graph, chained"] = graphed(lambda: ws_module.pyramid_attention_ws(
                    q, k, v, plan, pyr.pooled_k_all, pyr.pooled_v_all, out, scale_log2, True, None, 2))
            base = t["graph"]
            print(f"L={n} {label:18s} plain {t['plain']:.4f} tail {t['plain tail']:.4f} "
                  f"({t['plain tail'] / t['plain'] - 1:+.1%}) | graph {base:.4f} tail {t['graph tail']:.4f} "
                  f"({t['graph tail'] / base - 1:+.1%}), unchained {t['graph tail, unchained'] / base - 1:+.1%}, "
                  f"sums given {t['graph tail, sums given']:.4f} "
                  f"({t['graph tail, sums given'] / base - 1:+.1%}), sums given unchained "
                  f"{t['graph tail, sums given, unchained'] / base - 1:+.1%}, no tail chained "
                  f"{t.get('graph, chained', float('nan')) / base - 1:+.1%}, sums launch {t['sums launch'] * 1000:.1f} us",
                  flush=True)


if __name__ == "__main__":
    main()
