"""Tail aggregation's cost, and the kernel's fixed costs, against past versions in one process.

For every plan, each version runs it with and without ``tail=True`` (its own pyramid and plan lists, prebuilt;
the launcher's own work per call, such as the skipped-block sums of the current version, is inside the timed
call). Prints one line per (plan, version) and writes a CSV (``--csv``): time without and with tail, the tail's
overhead, the time against the current version, the output's difference to the current version's. The calls of
one plan are timed in rounds (``--rounds``, 2 by default), every version in turn within a round, and the spread of
the rounds is written beside the overhead and the time against the current version: a gain smaller than that
spread is not one.

Plans: every wholly visible block at one level (1, 2, 4, 8; sink and diagonal exact; level 8 also with the runs'
remainders that would be single blocks made exact), sink and diagonal only,
random mixes keeping 50 / 25 / 10% of blocks (two seeds), and PSA's default, ``videomme-0.65`` and exact-first
plans on the pareto families.

Run on a GPU from the repository root: python notes/ab/tail_ab.py [tags or commits ...] [--lengths ...]
(notes/ab/variants.py materialises the past versions; carry notes/ab/.variants on a machine without git history)
"""

import argparse
import csv
import functools
import inspect

import torch
import triton

from vlmsparse.bench.common import device_time_ms, sdpa_dense
from vlmsparse.bench.kernel import VIDEO_GRIDS, one_level_plan, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels.plan_lists import SPAN_MIN_REMAINDER
from vlmsparse.methods import get_method

from tail_parts import seeded_qkv
from variants import load, package_of, same_as_tree


DEVICE_TIME = False  # --device-time: device time with the host ahead (bench.common.device_time_ms)
ROUNDS = 2  # --rounds: each call timed once a round, the versions in turn
BUILD_IN_CALL = False  # --build-in-call: each call builds its own pyramid (as a planned call does)


def t_ms(fn):
    if DEVICE_TIME:
        return device_time_ms(fn)
    return triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median")


class Rows(csv.DictWriter):
    """A CSV writer that flushes each row (a run cut short keeps what it measured)."""

    def __init__(self, f, **kw):
        super().__init__(f, **kw)
        self.file = f

    def flush(self):
        self.file.flush()


def versions(tags, diagonal_passes=True):
    # every plan here keeps its diagonal blocks: "current" is told so (as planners' plans are), "current, diagonal
    # passes" is not (check_levels=False: the tail keeps its passes over skipped diagonal blocks)
    kept = functools.partial(pyramid_attention, diagonal_kept=True)
    out = {"current": (build_kv_pyramid, compile_plan, kept)}
    if diagonal_passes:
        out["current, diagonal passes"] = (build_kv_pyramid, compile_plan, pyramid_attention)
    for tag in tags:
        module = load(tag)
        own = package_of(module)
        attend = module.pyramid_attention
        if "diagonal_kept" in inspect.signature(attend).parameters:  # versions that know the promise get it
            attend = functools.partial(attend, diagonal_kept=True)
        out[tag] = (own.build_kv_pyramid, own.compile_plan, attend)
    return out


def binary_kwargs(attend, binary):
    """The keywords that run an exact-only plan as a binary one (``pooled=False``) where ``attend`` (a version's
    launcher, or a partial of it) knows that argument; none otherwise."""
    if binary and "pooled" in inspect.signature(getattr(attend, "func", attend)).parameters:
        return {"pooled": False}
    return {}


def whole_spans(levels, level=8):
    """``levels`` with the first ``r`` blocks at ``level`` of each row made exact, where the row's ``n`` blocks at
    ``level`` (one run in a one-level plan) leave a remainder ``r = n % level`` that the plan lists would read as
    single blocks (``plan_lists.SPAN_MIN_REMAINDER``): the same plan read through whole and part-filled spans only,
    so a kernel change to the single blocks' path leaves its work alone."""
    at = levels == level
    rank = at.to(torch.int32).cumsum(-1)
    r = at.sum(-1, keepdim=True) % level
    lone = (r > 0) & (r < SPAN_MIN_REMAINDER[level])
    return torch.where(at & lone & (rank <= r), torch.ones_like(levels), levels)


def measure(label, length, q, k, v, levels, vers, writer, block=128, binary=False):
    """``binary``: a plan of exact blocks only, run as a binary plan (``pooled=False``, where a version knows it),
    as a call that checks its levels runs it. Every (version, tail) call is timed once a round, the versions in
    turn within each round (``ROUNDS`` rounds, each call's time the least of its rounds), so a drift of the
    device's speed during the plan reaches every version alike; the spread of the rounds' tail overheads and
    times against the current version is written beside them (``*_lo``, ``*_hi``)."""
    calls, outs = {}, {}
    for name, (build, compile_, attend) in vers.items():
        plan = compile_(levels, q.shape[2], k.shape[2], block, block, True)
        kw = binary_kwargs(attend, binary)
        for tail in (False, True):
            pyr = None if BUILD_IN_CALL else build(k, v, tail=tail, block_n=block)
            fn = functools.partial(attend, q, k, v, levels, block_m=block, block_n=block, tail=tail, pyramid=pyr,
                                   plan=plan, check_levels=False, **kw)
            outs[name, tail] = fn().float()
            calls[name, tail] = fn
    rounds = {key: [] for key in calls}
    for _ in range(ROUNDS):
        for key, fn in calls.items():
            rounds[key].append(t_ms(fn))
    first = next(iter(vers))  # the current version: every other is compared with it
    base = {tail: min(rounds[first, tail]) for tail in (False, True)}
    for name in vers:
        times = {tail: min(rounds[name, tail]) for tail in (False, True)}
        diff = {t: ((outs[name, t] - outs[first, t]).norm() / outs[first, t].norm()).item() for t in (False, True)}
        over = [a / b - 1 for a, b in zip(rounds[name, True], rounds[name, False])]
        vs_tail = [a / b for a, b in zip(rounds[name, True], rounds[first, True])]
        row = dict(length=length, plan=label, version=name, ms=times[False], ms_tail=times[True],
                   tail_overhead=times[True] / times[False] - 1, vs_current=times[False] / base[False],
                   vs_current_tail=times[True] / base[True], diff=diff[False], diff_tail=diff[True], rounds=ROUNDS,
                   tail_overhead_lo=min(over), tail_overhead_hi=max(over), vs_current_tail_lo=min(vs_tail),
                   vs_current_tail_hi=max(vs_tail))
        writer.writerow(row)
        writer.flush()
        print(f"L={length} {label:34s} {name:26s} {times[False]:8.3f} ms  tail {times[True]:8.3f} ms "
              f"({row['tail_overhead']:+.1%}, rounds {min(over):+.1%} to {max(over):+.1%})  vs current "
              f"{row['vs_current']:.3f} / {row['vs_current_tail']:.3f}  diff {diff[False]:.1e} / {diff[True]:.1e}",
              flush=True)
        TIMES[length, label, name] = times


def build_costs(length, k, v, vers, writer, block=128):
    """Each version's pyramid build without and with tail, timed alone (a row with plan "pyramid build"): the plans'
    rows time the attention call on a pyramid built beforehand (with ``--build-in-call``, the build as well), so work
    a version moves into the build shows here."""
    for name, (build, _, _) in vers.items():
        times = {tail: min(t_ms(lambda: build(k, v, tail=tail, block_n=block)),
                           t_ms(lambda: build(k, v, tail=tail, block_n=block))) for tail in (False, True)}
        writer.writerow(dict(length=length, plan="pyramid build", version=name, ms=times[False], ms_tail=times[True],
                             tail_overhead=times[True] / times[False] - 1))
        writer.flush()
        print(f"L={length} {'pyramid build':34s} {name:26s} {times[False]:8.3f} ms  tail {times[True]:8.3f} ms "
              f"({times[True] / times[False] - 1:+.1%})", flush=True)


#: (length, plan label, version) -> {tail: ms}, for the marginal costs printed after the one-level plans
TIMES: dict = {}


def marginal_costs(length, levels, names):
    """Each version's marginal cost of a block at each pooled level (and with tail) from this run's times of the
    one-level plans: ``(T_p - T_0) / (T_1 - T_0)``, against the target ``1.25 / p``."""
    for name in names:
        t = {lv: TIMES.get((length, f"one level {lv}", name)) for lv in levels}
        if t.get(0) is None or t.get(1) is None:
            continue
        parts = []
        for lv in (2, 4, 8):
            if t.get(lv) is None:
                continue
            costs = [(t[lv][tail] - t[0][tail]) / (t[1][tail] - t[0][tail]) for tail in (False, True)]
            parts.append(f"level {lv} {costs[0]:.3f} / {costs[1]:.3f} ({'met' if costs[0] <= 1.25 / lv else 'not met'})")
        if parts:
            print(f"L={length} marginal cost {name:26s} " + ", ".join(parts) + "  (without / with tail)", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("tags", nargs="*")
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--csv", default="tail_ab.csv")
    p.add_argument("--no-random", action="store_true", help="leave out the random mixed plans (short calls)")
    p.add_argument("--quick", action="store_true",
                   help="fewer plans: level 4 and sink-and-diagonal, random keep 0.25 and 0.1 (one seed), PSA's "
                        "default and videomme-0.65 on the medium family")
    p.add_argument("--no-diagonal-passes", action="store_true",
                   help="leave out the current version with its tail passes over skipped diagonal blocks")
    p.add_argument("--device-time", action="store_true",
                   help="time each call as device time with the host ahead (a short call eager waits on the host)")
    p.add_argument("--rounds", type=int, default=2,
                   help="time every (version, tail) call once a round, the versions in turn, this many rounds; "
                        "each time is the least of its rounds, and the rounds' spread is written beside it")
    p.add_argument("--one-levels", type=int, nargs="+", metavar="LEVEL",
                   help="the one-level plans to run (0: sink and diagonal only); default 1 2 4 8 0, with --quick 4 0")
    p.add_argument("--families", nargs="+", choices=sorted(FAMILIES), metavar="FAMILY",
                   help="the input families of PSA's plans (default diffuse medium peaked, with --quick medium)")
    p.add_argument("--build-in-call", action="store_true",
                   help="every call builds its own pyramid (as a planned call does) instead of one built beforehand: "
                        "the times then hold the build, and work a version moves into it")
    args = p.parse_args()
    global DEVICE_TIME, ROUNDS, BUILD_IN_CALL
    DEVICE_TIME = args.device_time
    BUILD_IN_CALL = args.build_in_call
    if args.rounds < 1:
        p.error("--rounds takes a whole number of at least 1")
    ROUNDS = args.rounds
    vers = versions(args.tags, diagonal_passes=not (args.quick or args.no_diagonal_passes))
    for tag in args.tags:
        if same_as_tree(tag):
            print(f"WARNING: {tag} is the tree's own kernels package: its A/B against the tree measures nothing "
                  "(run from a checkout of main, or of the version the tree should be)", flush=True)
    with open(args.csv, "w", newline="") as f:
        writer = Rows(f, fieldnames=["length", "plan", "version", "ms", "ms_tail", "tail_overhead",
                                     "vs_current", "vs_current_tail", "diff", "diff_tail", "rounds",
                                     "tail_overhead_lo", "tail_overhead_hi", "vs_current_tail_lo",
                                     "vs_current_tail_hi"])
        writer.writeheader()
        for length in args.lengths:
            q, k, v = seeded_qkv(length)
            cudnn = sdpa_dense("cudnn")
            t_dense = min(t_ms(lambda: cudnn(q, k, v)), t_ms(lambda: cudnn(q, k, v)))
            print(f"L={length} cuDNN {t_dense:.3f} ms", flush=True)
            writer.writerow(dict(length=length, plan="cudnn", version="torch", ms=t_dense))
            build_costs(length, k, v, vers, writer)
            one_levels = args.one_levels or ((4, 0) if args.quick else (1, 2, 4, 8, 0))
            for level in one_levels:
                # exact blocks only (level 1, and 0: sink and diagonal) run as binary plans, as a checked call runs
                # them: a pooled kernel whose exact steps got dearer shows it in the marginal costs
                measure(f"one level {level}", length, q, k, v, one_level_plan(4, length, 128, level), vers, writer,
                        binary=level in (0, 1))
            marginal_costs(length, one_levels, list(vers))
            if 8 in one_levels:  # level 8 with no single block: the spans' path alone
                measure("one level 8 whole spans", length, q, k, v, whole_spans(one_level_plan(4, length, 128, 8)),
                        vers, writer)
            for keep in () if args.no_random else ((0.25, 0.1) if args.quick else (0.5, 0.25, 0.1)):
                for seed in ((0,) if args.quick else (0, 1)):
                    measure(f"random keep {keep} seed {seed}", length, q, k, v,
                            random_mixed_plan(1, 4, length, 128, keep, seed=seed), vers, writer)
            frames, h, w = VIDEO_GRIDS[length]
            for family in args.families or (("medium",) if args.quick else ("diffuse", "medium", "peaked")):
                for seed in (0,):
                    qv, kv, vv, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16,
                                                   seed=1000 * seed + length + 11, **FAMILIES[family])
                    settings = [("psa default", {}), ("psa videomme-0.65", dict(preset="videomme-0.65"))]
                    if not args.quick:
                        settings.append(("psa exact-first 0.6", dict(thresholds=(0.6, 0.6, 0.76, 0.88),
                                                                     lone_pooled="exact")))
                    for label, kw in settings:
                        plan = get_method("psa", **kw).plan(qv, kv, visual)
                        measure(f"{label} {family} s{seed}", qv.shape[2], qv, kv, vv, plan.levels, vers, writer)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
