"""The tail's means made in the plan lists' launch: a planned call's whole chain, timed with and without tail.

A planned call today runs, after the planner's scores and level assignment: the plan lists' launch (at planning),
then the pyramid's build, then (with tail) the skipped sums' launch, then the attention kernel. The sums' launch is
the tail's only launch of its own. Here the lists' launch is moved after the build and made the sums' launch too:
one grid whose first programs compile the plan rows (the lists' kernel, one row each) and whose last programs
make the tail key (the sums' kernel's programs: the skip mask times the block sums, 64 rows a program). With tail
a planned call then has as many launches as without it.

Times three chains on the same plan (device time with the host ahead, rounds interleaved, each the least of its
rounds), on PSA's plans of the video-like families:

- ``none``: lists, build, attention (chained to the build), no tail (today's call without tail);
- ``tail``: lists, build, sums (chained), attention (chained), as a planned call with tail runs today;
- ``fused``: build, lists and means in one launch, attention (not chained), with tail;
- ``fused-pdl``: the same with the lists' and means' launch chained to the build (its means programs wait);
- ``fused-pdl3``: and the attention chained to that launch, every partition waiting before its first read.

Prints each chain's time, the tail's overhead of ``tail`` and ``fused`` against ``none``, and the output's
difference of ``fused`` from ``tail`` (the same means, so the same bits are expected).

Run on a GPU from the repository root: python notes/ab/plan_means_ab.py [--lengths 8192 32768] [--rounds 3]
"""

import argparse
import csv
import datetime
import math
import sys

import torch
import triton
import triton.language as tl

from vlmsparse.bench.common import device_time_ms
from vlmsparse.bench.kernel import VIDEO_GRIDS
from vlmsparse.bench.pareto import FAMILIES
from vlmsparse.bench.synthetic import video_qkv
from vlmsparse.kernels import build_kv_pyramid, compile_plan, pyramid_attention
from vlmsparse.kernels.blocks import cdiv
from vlmsparse.kernels.pdl import pdl_ok, release_dependents, wait_for_prior
from vlmsparse.kernels.plan_lists import N_CATEGORIES, SPAN_MIN_REMAINDER, CompiledPlan, _plan_lists_kernel
from vlmsparse.kernels.pyramid import LOG2E, _skip_mask, sums_form
from vlmsparse.kernels.pyramid_ws import pyramid_attention_ws
from vlmsparse.methods import get_method


@triton.jit
def _means_part(m, Levels, Sums, MeanK, MeanV, Count, n_qb, n_kb, rows_per_kv_head, q_len, k_len, width, head_dim,
                n_r, n_c, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, R: tl.constexpr,
                C: tl.constexpr, W: tl.constexpr):
    """Means program ``m`` (of ``n_r`` x ``n_c`` x kv-heads): the sums' kernel's ``MEANS`` body."""
    r_blk = m % n_r
    c_blk = (m // n_r) % n_c
    bkv = m // (n_r * n_c)
    rows = r_blk * R + tl.arange(0, R)
    r_ok = rows < rows_per_kv_head
    first_row = (rows % n_qb) * BLOCK_M
    cols = c_blk * W + tl.arange(0, W)
    c_ok = cols < width
    row = bkv.to(tl.int64) * rows_per_kv_head + rows
    sums = Sums + bkv.to(tl.int64) * n_kb * width
    acc = tl.zeros([R, W], dtype=tl.float32)
    count = tl.zeros([R], dtype=tl.float32)
    for c0 in range(0, n_kb, C):
        kb = c0 + tl.arange(0, C)
        kb_ok = kb < n_kb
        mk = _skip_mask(Levels, row, r_ok, first_row, kb, kb_ok, n_kb, q_len, k_len, CAUSAL, BLOCK_N)
        x = tl.load(sums + kb[:, None] * width + cols[None, :], mask=kb_ok[:, None] & c_ok[None, :], other=0.0)
        acc += tl.dot(mk, x.to(tl.float32), input_precision="ieee")
        n_kb_keys = tl.load(sums + kb * width + (width - 1), mask=kb_ok, other=0.0)
        count += tl.sum(mk * n_kb_keys[None, :], 1)
    mean = acc / tl.maximum(count, 1.0)[:, None]
    ok = r_ok[:, None] & c_ok[None, :]
    is_k = cols < head_dim
    is_v = (cols >= head_dim) & (cols < 2 * head_dim)
    tl.store(MeanK + row[:, None] * head_dim + cols[None, :], mean.to(MeanK.dtype.element_ty), mask=ok & is_k[None, :])
    tl.store(MeanV + row[:, None] * head_dim + (cols - head_dim)[None, :], mean.to(MeanV.dtype.element_ty),
             mask=ok & is_v[None, :])
    if c_blk == 0:
        tl.store(Count + row, count, mask=r_ok)


@triton.jit
def _lists_and_means_kernel(Levels, BlockIdx, CatOff, Sums, MeanK, MeanV, Count, n_rows, n_qb, n_kb, q_len, k_len,
                            rows_per_kv_head, width, head_dim, n_r, n_c,
                            CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NKB: tl.constexpr,
                            MIN2: tl.constexpr, MIN4: tl.constexpr, MIN8: tl.constexpr, R: tl.constexpr,
                            C: tl.constexpr, W: tl.constexpr, CHAINED: tl.constexpr, RELEASE: tl.constexpr):
    """Programs ``[0, n_rows)``: the plan lists' kernel, one plan row each (they read only the levels); the rest:
    the tail key's means, which read the pyramid's block sums (``CHAINED``: made by the launch before, waited for)."""
    release_dependents(RELEASE)
    pid = tl.program_id(0)
    if pid < n_rows:
        _plan_lists_kernel(Levels, BlockIdx, CatOff, n_qb, n_kb, q_len, k_len, CAUSAL, BLOCK_M, BLOCK_N, NKB,
                              MIN2, MIN4, MIN8)
        wait_for_prior(CHAINED)  # every program of a chained launch waits (vlmsparse.kernels.pdl)
    else:
        wait_for_prior(CHAINED)
        _means_part(pid - n_rows, Levels, Sums, MeanK, MeanV, Count, n_qb, n_kb, rows_per_kv_head, q_len, k_len,
                    width, head_dim, n_r, n_c, CAUSAL, BLOCK_M, BLOCK_N, R, C, W)


def lists_and_means(levels, pyramid, q_len, k_len, dtype, chained=False, release=False, block=128):
    """The plan lists and the tail key (mean keys, mean values, counts) in one launch."""
    b, hm, n_qb, n_kb = levels.shape
    hkv, width = pyramid.block_sums.shape[1], pyramid.block_sums.shape[3]
    d = (width - 1) // 2
    rows_per_kv_head = (hm // hkv) * n_qb
    rows = b * hm * n_qb
    lv = levels.contiguous()
    block_idx = torch.empty(rows, n_kb, device=levels.device, dtype=torch.int32)
    offsets = torch.empty(rows, N_CATEGORIES + 1, device=levels.device, dtype=torch.int32)
    mean_k = torch.empty(rows, d, device=levels.device, dtype=dtype)
    mean_v = torch.empty_like(mean_k)
    count = torch.empty(rows, device=levels.device, dtype=torch.float32)
    r, c, w, warps, _ = sums_form(rows_per_kv_head, n_kb)
    n_r, n_c = cdiv(rows_per_kv_head, r), cdiv(2 * d, w)
    chained = chained and pdl_ok(levels.device)
    # the lists' kernel takes 4 warps (its default); the means' programs their form's warps: one launch, one count
    _lists_and_means_kernel[(rows + n_r * n_c * b * hkv,)](
        lv, block_idx, offsets, pyramid.block_sums, mean_k, mean_v, count, rows, n_qb, n_kb, q_len, k_len,
        rows_per_kv_head, width, d, n_r, n_c,
        CAUSAL=True, BLOCK_M=block, BLOCK_N=block, NKB=max(16, triton.next_power_of_2(n_kb)),
        MIN2=SPAN_MIN_REMAINDER[2], MIN4=SPAN_MIN_REMAINDER[4], MIN8=SPAN_MIN_REMAINDER[8], R=r, C=c, W=w,
        CHAINED=chained, RELEASE=release and pdl_ok(levels.device), num_warps=warps, **({"launch_pdl": True} if chained else {}),
    )
    return CompiledPlan(block_idx, offsets, hm), (mean_k, mean_v, count)


def chains(q, k, v, levels):
    lq, lk = q.shape[2], k.shape[2]
    scale_log2 = LOG2E / math.sqrt(q.shape[-1])

    def none():
        plan = compile_plan(levels, lq, lk, 128, 128, True)
        return pyramid_attention(q, k, v, levels, plan=plan, check_levels=False, diagonal_kept=True, pooled=True)

    def tail():
        plan = compile_plan(levels, lq, lk, 128, 128, True)
        return pyramid_attention(q, k, v, levels, plan=plan, check_levels=False, diagonal_kept=True, pooled=True,
                                 tail=True)

    def fused(chained, pdl):
        def call():
            pyr = build_kv_pyramid(k, v, tail=True, block_n=128)
            plan, key = lists_and_means(levels, pyr, lq, lk, q.dtype, chained=chained, release=pdl == 3)
            return pyramid_attention_ws(q, k, v, plan, pyr.pooled_k_all, pyr.pooled_v_all, torch.empty_like(q),
                                        scale_log2, True, key, pdl)
        return call

    return {"none": none, "tail": tail, "fused": fused(False, 0), "fused-pdl": fused(True, 0),
            "fused-pdl3": fused(True, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--families", nargs="+", default=["diffuse", "medium", "peaked"])
    ap.add_argument("--presets", nargs="+", default=["videomme-0.65", "default"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
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
                    calls = chains(q, k, v, levels)
                    outs = {name: fn().float() for name, fn in calls.items()}
                    torch.cuda.synchronize()
                    rounds = {name: [] for name in calls}
                    for _ in range(args.rounds):
                        for name, fn in calls.items():
                            rounds[name].append(device_time_ms(fn))
                    t = {name: min(r) for name, r in rounds.items()}
                    diff = ((outs["fused"] - outs["tail"]).norm() / outs["tail"].norm()).item()
                    diff_pdl = ((outs["fused-pdl3"] - outs["tail"]).norm() / outs["tail"].norm()).item()
                    row = dict(date=datetime.date.today().isoformat(), device=dev, torch=torch.__version__,
                               triton=triton.__version__, length=q.shape[2], family=family, seed=seed, preset=preset,
                               rounds=args.rounds, ms_none=t["none"], ms_tail=t["tail"], ms_fused=t["fused"],
                               ms_fused_pdl=t["fused-pdl"], ms_fused_pdl3=t["fused-pdl3"], over_tail=t["tail"] / t["none"] - 1,
                               over_fused=t["fused"] / t["none"] - 1, over_fused_pdl=t["fused-pdl"] / t["none"] - 1,
                               over_fused_pdl3=t["fused-pdl3"] / t["none"] - 1,
                               diff_fused=diff, diff_fused_pdl3=diff_pdl)
                    print(f"L={q.shape[2]} {preset:14s} {family:8s} s{seed}: none {t['none']:.4f} ms, tail "
                          f"{row['over_tail']:+.1%}, fused {row['over_fused']:+.1%}, fused-pdl "
                          f"{row['over_fused_pdl']:+.1%}, fused-pdl3 {row['over_fused_pdl3']:+.1%}; diff {diff:.1e} / {diff_pdl:.1e}", flush=True)
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
