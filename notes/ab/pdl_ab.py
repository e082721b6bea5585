"""Chained launches (programmatic dependent launch) on and off, same process, same inputs and plans.

For every plan: the kernel with the pyramid prebuilt (tail off / on: with tail the skipped sums' launch comes right
before the kernel's) and with the pyramid built inside the call (the chain pyramid -> [sums ->] kernel), each timed
with ``vlmsparse.kernels.pdl.ENABLED`` off and on, interleaved, best of three medians; eager (``do_bench``) and
replayed from a CUDA graph. Then the planners' plan + kernel (``Method.plan`` then ``Plan.run``, the pyramid built
in the call) on the three input families of ``bench pareto``. Outputs with and without chaining must be equal to
the bit; the script stops otherwise.

Run on a GPU from the repository root: python notes/ab/pdl_ab.py [--lengths 8192 32768] [--csv pdl_ab.csv]
"""

import argparse
import csv
import datetime

import torch
import triton

from vlmsparse.bench.common import sdpa_dense
from vlmsparse.bench.kernel import VIDEO_GRIDS, one_level_plan, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pdl, pyramid_attention
from vlmsparse.methods import get_method

from tail_parts import graphed, seeded_qkv


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def ab(fn, graph):
    """Best of three (off, on) timings, interleaved; and the two outputs."""
    outs, times = {}, {False: [], True: []}
    for enabled in (False, True):
        pdl.ENABLED = enabled
        outs[enabled] = fn()
    if not torch.equal(outs[False], outs[True]):
        raise SystemExit("outputs differ with chained launches")
    for _ in range(3):
        for enabled in (False, True):
            pdl.ENABLED = enabled
            times[enabled].append(graphed(fn) if graph else t_ms(fn))
    pdl.ENABLED = True
    return min(times[False]), min(times[True])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--csv", default="pdl_ab.csv")
    p.add_argument("--no-graph", action="store_true", help="eager timings only")
    args = p.parse_args()
    if not pdl.pdl_ok(torch.device("cuda")):
        raise SystemExit("chained launches need a CUDA device of compute capability >= 9.0 and Triton >= 3.4")
    env = dict(date=datetime.date.today().isoformat(), device=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=triton.__version__)
    print(env, flush=True)
    modes = ("eager",) if args.no_graph else ("eager", "graph")
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*env, "L", "plan", "call", "timing", "ms_off", "ms_on", "on_vs_off",
                                          "cudnn_ms"])
        w.writeheader()

        def row(length, label, call, timing, off, on, dense):
            w.writerow(dict(env, L=length, plan=label, call=call, timing=timing, ms_off=off, ms_on=on,
                            on_vs_off=on / off, cudnn_ms=dense))
            f.flush()
            print(f"L={length} {label:28s} {call:28s} {timing:5s} off {off:8.4f}  on {on:8.4f} ms  "
                  f"on/off {on / off:.3f}", flush=True)

        for length in args.lengths:
            q, k, v = seeded_qkv(length)
            cudnn = sdpa_dense("cudnn")
            dense = t_ms(lambda: cudnn(q, k, v))
            plans = {f"one level {lv}": one_level_plan(4, length, 128, lv) for lv in (2, 4, 8)}
            for keep in (0.5, 0.25, 0.1):
                for seed in (0, 1):
                    plans[f"random keep {keep} s{seed}"] = random_mixed_plan(1, 4, length, 128, keep, seed=seed)
            for label, levels in plans.items():
                plan = compile_plan(levels, length, length, 128, 128, True)
                for tail in (False, True):
                    pyr = build_kv_pyramid(k, v, tail=tail, block_n=128)
                    # "prebuilt pyramid" chains nothing: the baseline of the tail's cost, and the timings' noise
                    calls = {
                        f"prebuilt pyramid{' + tail' if tail else ''}": lambda: pyramid_attention(
                            q, k, v, levels, tail=tail, pyramid=pyr, plan=plan, check_levels=False,
                            diagonal_kept=True),
                        f"pyramid in call{' + tail' if tail else ''}": lambda: pyramid_attention(
                            q, k, v, levels, tail=tail, plan=plan, check_levels=False, diagonal_kept=True),
                    }
                    for call, fn in calls.items():
                        for timing in modes:
                            off, on = ab(fn, timing == "graph")
                            row(length, label, call, timing, off, on, dense)
            del q, k, v
            frames, h, wd = VIDEO_GRIDS[length]
            for family in ("diffuse", "medium", "peaked"):
                qv, kv, vv, visual = video_qkv(frames, h, wd, device="cuda", dtype=torch.bfloat16, seed=length + 5,
                                               **FAMILIES[family])
                dense = t_ms(lambda: cudnn(qv, kv, vv))
                for name, kw in (("psa", {}), ("psa", dict(tail=True)), ("xattention", dict(tail=True))):
                    method = get_method(name, **kw)
                    label = f"{name}{' tail' if kw else ''} {family}"

                    def whole():
                        return method.plan(qv, kv, visual).run(qv, kv, vv)

                    off, on = ab(whole, False)  # eager only: planning syncs with the host
                    row(qv.shape[2], label, "plan + kernel", "eager", off, on, dense)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
