"""The plan lists and the tail key in one launch: a planned call's whole chain, timed with and without tail.

A planned call with tail aggregation used to run, after the planner's scores and level assignment: the plan lists'
launch (at planning), the pyramid's build, the skipped sums' launch (the tail key), the attention kernel. The tail
key's launch was the tail's only launch of its own. ``pyramid.plan_and_tail_key`` moves the lists after the build
and makes them in the tail key's launch (its first programs compile the plan rows, its last ones make the key), so a
call with tail runs as many launches as one without it.

Times four chains of the package's own calls on the same plan (device time with the host ahead, rounds
interleaved, each the least of its rounds), on PSA's plans of the video-like families:

- ``none``: lists, build, attention (chained to the build), no tail: a planned call without tail;
- ``tail``: lists, build, the tail key's launch, attention (each chained to the one before): the lists given;
- ``one``: build, lists and tail key in one launch (chained), attention (chained, waiting before its first read):
  a planned call with tail, which leaves its lists to the launcher (``Plan.run``), with
  ``pyramid.LISTS_WITH_TAIL_KEY`` on;
- ``one-unchained``: the same with no launch chained.

Prints the time of ``none`` and the overhead of each tailed chain against it, and how far the one launch's output is
from the tail's (the same lists; the key's float32 sums in another program form, so within its bfloat16 rounding).

Run on a GPU from the repository root: python notes/ab/plan_means_ab.py [--lengths 8192 32768] [--rounds 3]
"""

import argparse
import csv
import datetime
import sys

import torch
import triton

from vlmsparse.bench.common import device_time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import compile_plan, pdl, pyramid_attention
from vlmsparse.kernels import pyramid as pyramid_module
from vlmsparse.methods import get_method


def chains(q, k, v, levels, key_forms=((16, 32),)):
    """The chains to time: ``none``, ``tail``, then ``one`` for each key form (rows x columns of the key's programs,
    ``one`` alone for the package's default, ``one RxW`` for others) and ``one-unchained`` in the first form."""
    lq, lk = q.shape[2], k.shape[2]
    kw = dict(check_levels=False, diagonal_kept=True, pooled=True)
    default = (pyramid_module.LISTS_KEY_ROWS, pyramid_module.LISTS_KEY_COLUMNS)

    def none():
        plan = compile_plan(levels, lq, lk, 128, 128, True)
        return pyramid_attention(q, k, v, levels, plan=plan, **kw)

    def tail():
        plan = compile_plan(levels, lq, lk, 128, 128, True)
        return pyramid_attention(q, k, v, levels, plan=plan, tail=True, **kw)

    def one(form):
        def call():
            pyramid_module.LISTS_WITH_TAIL_KEY = True
            pyramid_module.LISTS_KEY_ROWS, pyramid_module.LISTS_KEY_COLUMNS = form
            try:
                return pyramid_attention(q, k, v, levels, tail=True, **kw)
            finally:
                pyramid_module.LISTS_WITH_TAIL_KEY = False
                pyramid_module.LISTS_KEY_ROWS, pyramid_module.LISTS_KEY_COLUMNS = default
        return call

    def unchained(fn):
        def call():
            pdl.ENABLED = False
            try:
                return fn()
            finally:
                pdl.ENABLED = True
        return call

    out = {"none": none, "tail": tail}
    for form in key_forms:
        out["one" if tuple(form) == default else f"one {form[0]}x{form[1]}"] = one(tuple(form))
    out["one-unchained"] = unchained(one(tuple(key_forms[0])))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--families", nargs="+", default=["diffuse", "medium", "peaked"])
    ap.add_argument("--presets", nargs="+", default=["videomme-0.65", "default"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--key-forms", nargs="+", default=["16x32"], metavar="RxW",
                    help="forms of the tail key's programs in the one launch (rows x columns), e.g. 16x32 16x64 32x16")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    try:
        key_forms = [tuple(int(x) for x in f.split("x")) for f in args.key_forms]
        assert all(len(f) == 2 and f[0] in (16, 32, 64) and f[1] in (16, 32, 64) for f in key_forms)
    except (ValueError, AssertionError):
        ap.error("--key-forms takes RxW with R and W among 16, 32 and 64, e.g. 16x32")
    dev = torch.cuda.get_device_name()
    print(dev, "torch", torch.__version__, "triton", triton.__version__, flush=True)
    out = open(args.csv, "a", newline="") if args.csv else None
    writer = None
    for length in args.lengths:
        frames, h, w = VIDEO_GRIDS[length]
        for family in args.families:
            for seed in args.seeds:
                q, k, v, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16,
                                            seed=1000 * seed + length + 11, **FAMILIES[family])
                for preset in args.presets:
                    kw = {} if preset == "default" else {"preset": preset}
                    levels = get_method("psa", **kw).plan(q, k, visual).levels
                    calls = chains(q, k, v, levels, key_forms)
                    outs = {name: fn().float() for name, fn in calls.items()}
                    torch.cuda.synchronize()
                    rounds = {name: [] for name in calls}
                    for _ in range(args.rounds):
                        for name, fn in calls.items():
                            rounds[name].append(device_time_ms(fn))
                    t = {name: min(r) for name, r in rounds.items()}
                    tailed = [n for n in calls if n not in ("none", "tail")]
                    diff = max(((outs[n] - outs["tail"]).norm() / outs["tail"].norm()).item() for n in tailed)
                    row = dict(date=datetime.date.today().isoformat(), device=dev, torch=torch.__version__,
                               triton=triton.__version__, length=q.shape[2], family=family, seed=seed, preset=preset,
                               rounds=args.rounds)
                    for n in calls:
                        row["ms_" + n.replace(" ", "_").replace("-", "_")] = t[n]
                    for n in ["tail"] + tailed:
                        row["over_" + n.replace(" ", "_").replace("-", "_")] = t[n] / t["none"] - 1
                    row["diff_one"] = diff
                    overs = ", ".join(f"{n} {t[n] / t['none'] - 1:+.1%}" for n in ["tail"] + tailed)
                    print(f"L={q.shape[2]} {preset:14s} {family:8s} s{seed}: none {t['none']:.4f} ms; {overs}; "
                          f"one launch's output at most {diff:.1e} from the tail's", flush=True)
                    if out:
                        if writer is None:
                            writer = csv.DictWriter(out, fieldnames=list(row))
                            if out.tell() == 0:
                                writer.writeheader()
                        writer.writerow(row)
                        out.flush()
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
