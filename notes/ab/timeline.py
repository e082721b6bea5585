"""Where a tile's time goes inside the warp-specialized kernel: a timeline from clock stamps, with and without tail.

Runs a kernel version built with stamps (``TRACE_BUFFER`` in its ``pyramid_ws``: tag ``kernel-exp-timeline`` and
versions made from it), once per plan with and without ``tail=True``, and reads back each program's stamps
(``%clock64`` of its SM, per tile): for each consumer warp group the tile's start (its Q there), the end of the
wide steps, the single pooled blocks, the masked blocks, the tail key's arrival, its count read, the tail step's
end and the output's store; for the producer the tile's draw, its Q's copy, the exact and the last copies issued.

Prints per plan the mean cycles per tile of each segment without and with tail, and what the tail adds to a
program's whole span, split by segment: where the tail's cost sits (its own step, the wait for its key, the next
tile's start). Writes the raw stamps (``timeline_<length>.npz``, one array per plan and tail) and a summary
(``timeline.txt``) to ``--out``.

Run on a Hopper GPU from the repository root: python notes/ab/timeline.py kernel-exp-timeline --out DIR
(materialise the version first with notes/ab/variants.py and carry notes/ab/.variants)
"""

import argparse
import pathlib
import re

import numpy as np
import torch

from vlmsparse.bench.common import device_time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS, one_level_plan, random_mixed_plan
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.methods import get_method

from tail_ab import binary_kwargs, versions
from tail_parts import seeded_qkv
from variants import load, package_of

TILES, EVENTS = 128, 32
#: consumer events (warp group 0 at 1-8, warp group 1 at 11-18), producer events at 21-26; event 0: the tile
CONSUMER = ("start", "wide", "narrow", "masked", "tail ready", "tail count", "tail end", "stored")
PRODUCER = ("drawn", "q released", "exact issued", "all issued", "tail issued", "next drawn")


def segments(tr):
    """Per-tile cycle counts of each consumer segment (warp group 0 and 1 averaged) from a trace
    ``[programs, TILES, EVENTS]``; tiles without a stamp are left out. Returns a dict of 1-D arrays and the mask
    of tiles with a tail step."""
    seg = {}
    valid = tr[:, :, 1] != 0
    tails = valid & (tr[:, :, 5] != 0)
    names = ("wide", "narrow", "masked", "tail", "store")
    for name in names:
        seg[name] = []
    gaps = []
    for wg in (0, 1):
        e = tr[:, :, 1 + 10 * wg: 9 + 10 * wg].astype(np.int64)
        start, wide, narrow, masked, ready, count, tail_end, stored = (e[:, :, i] for i in range(8))
        seg["wide"].append(wide - start)
        seg["narrow"].append(narrow - wide)
        seg["masked"].append(masked - narrow)
        seg["tail"].append(tail_end - masked)
        seg["store"].append(stored - tail_end)
        nxt = np.zeros_like(start)
        nxt[:, :-1] = start[:, 1:]
        gap = np.where(nxt != 0, nxt - stored, np.nan)  # a program's last tile has no next
        gaps.append(gap)
    out = {name: (seg[name][0] + seg[name][1]) / 2 for name in names}
    out["to next tile"] = (gaps[0] + gaps[1]) / 2
    e = tr[:, :, 21:27].astype(np.int64)
    drawn, released = e[:, :, 0], e[:, :, 1]
    out["producer: q released wait"] = np.where(drawn != 0, released - drawn, 0)
    # tail waits inside the tail step (warp group 0)
    ready, count, masked = tr[:, :, 5].astype(np.int64), tr[:, :, 6].astype(np.int64), tr[:, :, 4].astype(np.int64)
    out["tail: key wait"] = np.where(tails, ready - masked, 0)
    out["tail: count"] = np.where(tails, count - ready, 0)
    out["tail: step"] = np.where(tails, tr[:, :, 7].astype(np.int64) - count, 0)
    return out, valid, tails


def span(tr):
    """Each program's span in cycles: its first tile's start to its last output's store (warp group 0)."""
    starts = np.where(tr[:, :, 1] != 0, tr[:, :, 1], np.iinfo(np.int64).max).min(1)
    ends = np.where(tr[:, :, 8] != 0, tr[:, :, 8], 0).max(1)
    return (ends - starts)[ends > 0]


def run(attend, build, compile_, ws, q, k, v, levels, binary, tail):
    plan = compile_(levels, q.shape[2], k.shape[2], 128, 128, True)
    pyr = build(k, v, tail=tail, block_n=128)
    kw = binary_kwargs(attend, binary)

    def fn():
        return attend(q, k, v, levels, block_m=128, block_n=128, tail=tail, pyramid=pyr, plan=plan,
                      check_levels=False, **kw)

    fn()
    ms = min(device_time_ms(fn), device_time_ms(fn))
    n_prog = torch.cuda.get_device_properties(q.device).multi_processor_count
    buf = torch.zeros(n_prog * TILES * EVENTS, dtype=torch.int64, device=q.device)
    ws.TRACE_BUFFER = buf
    try:
        fn()
        ms_traced = min(device_time_ms(fn), device_time_ms(fn))
        buf.zero_()
        fn()
        torch.cuda.synchronize()
    finally:
        ws.TRACE_BUFFER = None
    return ms, ms_traced, buf.view(n_prog, TILES, EVENTS).cpu().numpy()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("version", help="a version built with stamps (kernel-exp-timeline or one made from it)")
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--out", default="timeline_out")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    module = load(args.version)
    own = package_of(module)
    ws = own.pyramid_ws
    if not hasattr(ws, "TRACE_BUFFER"):
        raise SystemExit(f"{args.version}: its pyramid_ws has no TRACE_BUFFER (build it from kernel-exp-timeline)")
    # the version's own pyramid, plan lists and launcher, told that every plan here keeps its diagonal (else a call
    # with tail runs the Triton kernel, not this one)
    build, compile_, attend = versions([args.version], diagonal_passes=False)[args.version]
    summary = open(out / "timeline.txt", "a")

    def say(line):
        print(line, flush=True)
        summary.write(line + "\n")
        summary.flush()

    say(f"device {torch.cuda.get_device_name()}, version {args.version}")
    for length in args.lengths:
        q, k, v = seeded_qkv(length)
        plans = [("one level 8", one_level_plan(4, length, 128, 8), False),
                 ("sink and diagonal", one_level_plan(4, length, 128, 0), True)]
        for keep in (0.25, 0.1):
            for seed in args.seeds:
                plans.append((f"random keep {keep} seed {seed}", random_mixed_plan(1, 4, length, 128, keep, seed=seed),
                              False))
        inputs = {None: (q, k, v)}
        frames, h, w = VIDEO_GRIDS[length]
        for family in ("medium",):
            qv, kv, vv, visual = video_qkv(frames, h, w, device="cuda", dtype=torch.bfloat16,
                                           seed=length + 11, **FAMILIES[family])
            inputs[family] = (qv, kv, vv)
            plans.append((f"psa default {family}", get_method("psa").plan(qv, kv, visual).levels, family))
            plans.append((f"psa videomme-0.65 {family}",
                          get_method("psa", preset="videomme-0.65").plan(qv, kv, visual).levels, family))
        raw = {}
        for label, levels, kind in plans:
            qq, kk, vv = inputs[kind if isinstance(kind, str) else None]
            binary = kind is True
            res = {}
            for tail in (False, True):
                res[tail] = run(attend, build, compile_, ws, qq, kk, vv, levels, binary, tail)
                raw[f"{re.sub(r'[^a-z0-9]+', '_', label)}_tail{int(tail)}"] = res[tail][2]
                np.savez_compressed(out / f"timeline_{length}.npz", **raw)  # rewritten as plans come
            (ms0, mst0, tr0), (ms1, mst1, tr1) = res[False], res[True]
            s0, valid0, _ = segments(tr0)
            s1, valid1, tails1 = segments(tr1)
            if not valid1.any() or not valid0.any():
                say(f"\nL={length} {label}: no stamps (the call ran another kernel)")
                continue
            sp0, sp1 = span(tr0), span(tr1)
            n0, n1 = valid0.sum(), valid1.sum()
            say(f"\nL={length} {label}: {ms0:.4f} / {ms1:.4f} ms without / with tail ({ms1 / ms0 - 1:+.1%}); traced "
                f"{mst0:.4f} / {mst1:.4f} ms ({mst1 / mst0 - 1:+.1%}); tiles {n0} / {n1}, with a tail step "
                f"{tails1.sum()}; program span mean {sp0.mean():.0f} / {sp1.mean():.0f} cycles "
                f"({sp1.mean() / sp0.mean() - 1:+.1%}), max {sp0.max()} / {sp1.max()}; "
                f"cycles per us {sp0.mean() / (mst0 * 1e3):.0f}")
            say(f"  {'segment':28s} {'per tile, no tail':>18s} {'with tail':>10s} {'per program, added':>20s}")
            progs = tr0.shape[0]
            for name in s0:
                a = np.nanmean(s0[name][valid0]) if name not in ("tail: key wait", "tail: count", "tail: step") else 0.0
                mask1 = tails1 if name.startswith("tail:") else valid1
                b = np.nanmean(s1[name][mask1]) if mask1.any() else 0.0
                add = (np.nansum(s1[name][mask1])
                       - (np.nansum(s0[name][valid0]) if not name.startswith("tail:") else 0)) / progs
                say(f"  {name:28s} {a:18.0f} {b:10.0f} {add:20.0f}")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
