"""The pyramid kernel on a CUDA GPU, checked against the float64 reference and timed against dense SDPA.

Every ratio is against torch SDPA with the cuDNN backend (dense causal GQA) measured in the same run, on the
same inputs. Correctness against the float64 reference is checked in the same run, on every head, for the
first and the last ``--check-rows`` queries (both are exact sub-problems of the causal prefill). The planner
part (``--methods``) builds video-like inputs of ``L / 256`` frames of 16 x 16 visual tokens plus 96 text
tokens, so its rows are 96 tokens longer than the length asked for (8192 -> 8288); it says so. Those inputs come
in the families of ``bench pareto`` (``--families``: how concentrated attention is).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import replace

import torch

from vlmsparse.kernels import block_classes, build_kv_pyramid, compile_plan, plan_shape, pyramid_attention
from vlmsparse.kernels.blocks import INVISIBLE, PARTIAL
from vlmsparse.kernels.pyramid_ws import ws_supported
from vlmsparse.kernels.reference import pyramid_attention_ref
from vlmsparse.methods.sparsity import plan_sparsity

from .common import (
    RunOutput,
    add_output_arguments,
    causal_attention_flops,
    device_time_ms,
    environment,
    print_table,
    sdpa_dense,
    time_ms,
)
from .pareto import FAMILIES

#: Shown under ``--help``; every example needs a CUDA GPU.
EXAMPLES = """\
examples:
  python -m vlmsparse.bench kernel                                  # the full run (H200: a few minutes)
  python -m vlmsparse.bench kernel --lengths 8192 --keeps 0.25 --methods psa
  python -m vlmsparse.bench kernel --skip-random --methods psa xattention --results
"""


def random_mixed_plan(
    batch: int, heads: int, length: int, block: int, keep: float, mix=(0.4, 0.2, 0.2, 0.2), device="cuda", seed=0
) -> torch.Tensor:
    """A plan with the layout of a real one (sink and diagonal exact) and a random mix of kept levels.

    ``keep`` is the fraction of off-diagonal causal blocks kept; ``mix`` the shares of levels 1, 2, 4, 8 among them.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = plan_shape(batch, heads, length, length, block, block)
    u = torch.rand(shape, generator=g)
    kept = torch.rand(shape, generator=g) < keep
    cuts = torch.tensor(mix).cumsum(0)
    level_idx = torch.bucketize(u, cuts.clamp(max=1.0 - 1e-6))
    levels = torch.tensor([1, 2, 4, 8])[level_idx.clamp(max=3)]
    levels = torch.where(kept, levels, torch.zeros_like(levels)).to(torch.int8)
    cls = block_classes(length, length, block, block, True)
    levels[..., cls == PARTIAL] = 1
    levels[..., 0] = 1
    levels[..., cls == INVISIBLE] = 0
    return levels.to(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check_against_reference(q, k, v, levels, block: int, tail: bool, rows: int, **kernel) -> float:
    """Worst relative L2 error of the kernel against the float64 reference, on the first and last ``rows`` queries.

    Both ends are exact sub-problems: the first rows see only the first keys (causal), and the last rows are a
    bottom-right aligned ``Lq < Lk`` problem. Checking them bounds the reference's cost at long lengths. ``kernel``:
    the timed call's keyword arguments of ``pyramid_attention`` (so the kernel checked is the kernel timed: with
    ``check_levels=False`` a tail runs even on a plan that skips nothing).
    """
    length = q.shape[2]
    out = pyramid_attention(q, k, v, levels, block_m=block, block_n=block, tail=tail, **kernel)
    if length <= 2 * rows:
        ref = pyramid_attention_ref(q, k, v, levels, block_m=block, block_n=block, tail=tail, row_chunk=256)
        return rel_err(out, ref)
    nb = rows // block
    ref_first = pyramid_attention_ref(
        q[:, :, :rows], k[:, :, :rows], v[:, :, :rows], levels[:, :, :nb, :nb],
        block_m=block, block_n=block, tail=tail, row_chunk=256,
    )
    ref_last = pyramid_attention_ref(
        q[:, :, -rows:], k, v, levels[:, :, -nb:], block_m=block, block_n=block, tail=tail, row_chunk=256
    )
    return max(rel_err(out[:, :, :rows], ref_first), rel_err(out[:, :, -rows:], ref_last))


def run_random(args: argparse.Namespace, rows: list[dict] | None = None) -> list[dict]:
    env = environment()
    dtype = getattr(torch, args.dtype)
    rows = [] if rows is None else rows  # a SavedRows keeps each row as it comes
    cudnn, flash = sdpa_dense("cudnn"), sdpa_dense("flash")
    for length in args.lengths:
        torch.manual_seed(length)
        b, hq, hkv, d = 1, args.heads_q, args.heads_kv, args.head_dim
        q = torch.randn(b, hq, length, d, device="cuda", dtype=dtype)
        k = torch.randn(b, hkv, length, d, device="cuda", dtype=dtype)
        v = torch.randn(b, hkv, length, d, device="cuda", dtype=dtype)
        shapes = dict(B=b, Hq=hq, Hkv=hkv, L=length, D=d, dtype=args.dtype)
        flops = causal_attention_flops(b, hq, length, length, d)
        t_cudnn = time_ms(lambda: cudnn(q, k, v))
        t_flash = time_ms(lambda: flash(q, k, v))
        base = dict(env, **shapes, cudnn_ms=t_cudnn)
        rows.append(dict(base, variant="sdpa_cudnn", sparsity=0.0, ms=t_cudnn, tflops=flops / t_cudnn / 1e9, vs_cudnn=1.0))
        rows.append(dict(base, variant="sdpa_flash", sparsity=0.0, ms=t_flash, tflops=flops / t_flash / 1e9,
                         vs_cudnn=t_cudnn / t_flash))
        # every block at level 1: must equal dense attention
        ones = torch.ones(plan_shape(b, hkv, length, length, args.block, args.block), dtype=torch.int8, device="cuda")
        dense_ref = cudnn(q, k, v)
        pyr1 = build_kv_pyramid(k, v)
        plan1 = compile_plan(ones, length, length, args.block, args.block, True)
        # the launcher's own choice of kernel (the warp-specialized one on an sm_90 GPU where it applies), then
        # the Triton kernel at each --configs pair
        default_name = "ws" if ws_supported(q, k, v, args.block, args.block, False) else "triton"
        for cfg in [None] + list(args.configs):
            opts = {} if cfg is None else dict(num_warps=cfg[0], num_stages=cfg[1], kernel="triton")
            label = default_name if cfg is None else f"triton_w{cfg[0]}s{cfg[1]}"
            t = time_ms(lambda: pyramid_attention(
                q, k, v, ones, block_m=args.block, block_n=args.block, check_levels=False, pyramid=pyr1, plan=plan1,
                **opts))
            t_full = time_ms(lambda: pyramid_attention(
                q, k, v, ones, block_m=args.block, block_n=args.block, check_levels=False, **opts))
            err = rel_err(pyramid_attention(q, k, v, ones, block_m=args.block, block_n=args.block,
                                            check_levels=False, **opts), dense_ref)
            rows.append(dict(base, variant=f"pyramid_all_level1_{label}", sparsity=0.0, ms=t,
                             tflops=flops / t / 1e9, vs_cudnn=t_cudnn / t, rel_err_vs_cudnn=err,
                             with_pyramid_and_compile_ms=t_full))
            # the same plan as a binary plan (what XAttention's and SpargeAttn's plans run): the kernel compiled
            # without its pooled loops, no pyramid
            t_bin = time_ms(lambda: pyramid_attention(
                q, k, v, ones, block_m=args.block, block_n=args.block, check_levels=False, plan=plan1, pooled=False,
                **opts))
            rows.append(dict(base, variant=f"pyramid_all_level1_binary_{label}", sparsity=0.0, ms=t_bin,
                             tflops=flops / t_bin / 1e9, vs_cudnn=t_cudnn / t_bin, rel_err_vs_cudnn=rel_err(
                                 pyramid_attention(q, k, v, ones, block_m=args.block, block_n=args.block,
                                                   check_levels=False, pooled=False, **opts), dense_ref)))
        # kernel alone with a prebuilt pyramid and compiled plan (what a layer pays once planning is done)
        for keep, plan_seed in [(keep, seed) for keep in args.keeps for seed in args.plan_seeds]:
            no_tail: dict[str, float] = {}
            for tail in (False, True):
                levels = random_mixed_plan(b, hkv, length, args.block, keep, seed=length + plan_seed)
                s = plan_sparsity(levels, length, length, args.block, args.block).overall
                pyr = build_kv_pyramid(k, v, tail=tail, block_n=args.block)
                plan = compile_plan(levels, length, length, args.block, args.block, True)
                call = lambda: pyramid_attention(
                    q, k, v, levels, block_m=args.block, block_n=args.block, tail=tail, pyramid=pyr, plan=plan,
                    check_levels=False, diagonal_kept=True)
                t_kernel = time_ms(call)
                # the kernel's device time with the host ahead: one call at a time, a short kernel waits on its own
                # launches (the host's), which says nothing of the kernel
                t_device = device_time_ms(call)
                overhead = {}
                if tail:
                    overhead = dict(tail_overhead=t_kernel / no_tail["ms"] - 1.0,
                                    tail_overhead_device=t_device / no_tail["device_ms"] - 1.0)
                else:
                    no_tail = dict(ms=t_kernel, device_ms=t_device)
                t_full = time_ms(lambda: pyramid_attention(
                    q, k, v, levels, block_m=args.block, block_n=args.block, tail=tail, check_levels=False,
                    diagonal_kept=True))
                t_pyr = time_ms(lambda: build_kv_pyramid(k, v, tail=tail, block_n=args.block))
                t_compile = time_ms(lambda: compile_plan(levels, length, length, args.block, args.block, True))
                err = (check_against_reference(q, k, v, levels, args.block, tail, args.check_rows, check_levels=False,
                                               diagonal_kept=True) if args.check else float("nan"))
                rows.append(dict(
                    base, variant=f"pyramid_random_keep{keep}" + ("_tail" if tail else ""), sparsity=s, ms=t_kernel,
                    plan_seed=length + plan_seed, device_ms=t_device, **overhead, tflops=float("nan"),
                    vs_cudnn=t_cudnn / t_kernel, target_ms=1.25 * (1 - s) * t_cudnn,
                    with_pyramid_and_compile_ms=t_full, pyramid_ms=t_pyr, compile_ms=t_compile,
                    rel_err_vs_ref=err, ref_rows_checked=f"first and last {args.check_rows}",
                ))
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def one_level_plan(heads: int, length: int, block: int, level: int, device="cuda") -> torch.Tensor:
    """Sink and diagonal blocks exact, every other wholly visible block at ``level`` (0: skipped)."""
    shape = plan_shape(1, heads, length, length, block, block)
    cls = block_classes(length, length, block, block, True)
    levels = torch.full(shape, level, dtype=torch.int8)
    levels[..., cls == PARTIAL] = 1
    levels[..., 0] = 1
    levels[..., cls == INVISIBLE] = 0
    return levels.to(device)


def level_cost(eager: dict, device: dict, level: int, tail: bool) -> dict:
    """One level's columns from the five plans' times (``{(level, tail): ms}``, level 0 the plan that skips the
    blocks): the marginal cost and its target from the device times, the eager ratio beside it, the tail's
    overhead both ways."""
    marginal = (device[level, tail] - device[0, tail]) / (device[1, tail] - device[0, tail])
    return dict(
        ms=eager[level, tail], skip_ms=eager[0, tail], device_ms=device[level, tail], skip_device_ms=device[0, tail],
        marginal_cost=marginal,
        marginal_cost_eager=(eager[level, tail] - eager[0, tail]) / (eager[1, tail] - eager[0, tail]),
        share=1.0 / level, target_cost=1.25 / level, met=marginal <= 1.25 / level,
        tail_overhead=eager[level, True] / eager[level, False] - 1.0,
        tail_overhead_device=device[level, True] / device[level, False] - 1.0,
    )


def run_level_costs(args: argparse.Namespace, rows: list[dict] | None = None) -> list[dict]:
    """What one block costs at each level, relative to an exact block, from whole-kernel runs.

    Four plans differ only in the level of the wholly visible blocks past the sink (all at p = 1, 2, 4 or 8),
    and a fifth skips them: ``(t_p - t_skip) / (t_1 - t_skip)`` is a level-p block's marginal cost (its share of
    FLOPs is ``1 / p``; the target is at most ``1.25 / p``). Prebuilt pyramid and plan: the kernel alone. With
    ``tail=True`` on the same plans, the extra kernel time of tail aggregation.

    ``marginal_cost`` (and ``met``) come from device times with the host ahead: eager, one call at a time, the
    short plans are host-bound at 8k (on an H200 the plan of only sink and diagonal blocks took 0.22 ms eager and
    0.125 ms on the device), which shrinks the eager ratio to nothing. The eager ratio is kept as
    ``marginal_cost_eager``.
    """
    env = environment()
    dtype = getattr(torch, args.dtype)
    cudnn = sdpa_dense("cudnn")
    rows = [] if rows is None else rows  # a SavedRows keeps each row as it comes
    for length in args.lengths:
        torch.manual_seed(length + 1)
        b, hq, hkv, d = 1, args.heads_q, args.heads_kv, args.head_dim
        q = torch.randn(b, hq, length, d, device="cuda", dtype=dtype)
        k = torch.randn(b, hkv, length, d, device="cuda", dtype=dtype)
        v = torch.randn(b, hkv, length, d, device="cuda", dtype=dtype)
        t_cudnn = time_ms(lambda: cudnn(q, k, v))
        shapes = dict(B=b, Hq=hq, Hkv=hkv, L=length, D=d, dtype=args.dtype)
        times: dict[tuple[int, bool], float] = {}
        errs: dict[tuple[int, bool], float] = {}
        device: dict[tuple[int, bool], float] = {}
        for tail in (False, True):
            pyr = build_kv_pyramid(k, v, tail=tail, block_n=args.block)
            for level in (0, 1, 2, 4, 8):
                levels = one_level_plan(hkv, length, args.block, level)
                plan = compile_plan(levels, length, length, args.block, args.block, True)
                # the plans of exact blocks only (level 1, and sink and diagonal) run as binary plans, as a call that
                # checks its levels runs them: an exact block's cost is the binary kernel's, so a pooled kernel
                # whose exact steps got dearer shows it in the marginal costs instead of flattering them
                call = functools.partial(
                    pyramid_attention, q, k, v, levels, block_m=args.block, block_n=args.block, tail=tail, pyramid=pyr,
                    plan=plan, check_levels=False, diagonal_kept=True, pooled=level > 1)
                times[level, tail] = time_ms(call)
                device[level, tail] = device_time_ms(call)
                errs[level, tail] = (
                    check_against_reference(q, k, v, levels, args.block, tail, args.check_rows, check_levels=False,
                                            diagonal_kept=True, pooled=level > 1) if args.check
                    else float("nan"))
        for tail in (False, True):
            for level in (1, 2, 4, 8):
                rows.append(dict(
                    env, **shapes, variant=f"one_level_{level}" + ("_tail" if tail else ""), cudnn_ms=t_cudnn,
                    **level_cost(times, device, level, tail),
                    rel_err_vs_ref=errs[level, tail], ref_rows_checked=f"first and last {args.check_rows}",
                ))
        del q, k, v
        torch.cuda.empty_cache()
    return rows


METHOD_SETTINGS = {
    "psa": dict(name="psa"),
    "psa-videomme": dict(name="psa", preset="videomme-0.65"),
    "psa-levels-4-8": dict(name="psa", preset="levels-4-8"),  # skips blocks: what tail aggregation costs it
    "xattention": dict(name="xattention"),
    "sparge": dict(name="sparge"),
}

# (frames, rows, columns) of merged visual tokens: 8k, 16k and 32k visual tokens plus the text around them
VIDEO_GRIDS = {8192: (32, 16, 16), 16384: (64, 16, 16), 32768: (128, 16, 16)}


def run_methods(args: argparse.Namespace, rows: list[dict] | None = None) -> list[dict]:
    """Plan + kernel on video-like inputs: what a prefill layer pays, against SDPA cuDNN on the same inputs."""
    from vlmsparse.methods import get_method

    from .synthetic import video_qkv

    env = environment()
    dtype = getattr(torch, args.dtype)
    cudnn = sdpa_dense("cudnn")
    rows = [] if rows is None else rows  # a SavedRows keeps each row as it comes
    for length, family, n in ((n, f, i) for n in args.lengths for f in args.families for i in args.input_seeds):
        frames, height, width = VIDEO_GRIDS.get(length, (length // 256, 16, 16))
        q, k, v, visual = video_qkv(frames, height, width, heads_q=args.heads_q, heads_kv=args.heads_kv,
                                    head_dim=args.head_dim, device="cuda", dtype=dtype, seed=length + 1000 * n,
                                    **FAMILIES[family])
        total = q.shape[2]
        if total != length and family == args.families[0]:
            print(f"asked for {length} tokens: {frames} frames of {height}x{width} visual tokens and "
                  f"{total - frames * height * width} text tokens make {total} (the L column)", flush=True)
        t_cudnn = time_ms(lambda: cudnn(q, k, v))
        t_cudnn_device = device_time_ms(lambda: cudnn(q, k, v))  # as plan + kernel's total_device_ms below
        shapes = dict(B=1, Hq=args.heads_q, Hkv=args.heads_kv, L=total, visual_tokens=int(visual.sum()),
                      D=args.head_dim, dtype=args.dtype, family=family, input_seed=length + 1000 * n)
        for label in args.methods:
            setting = dict(METHOD_SETTINGS[label])
            method = get_method(setting.pop("name"), **setting)
            plan = method.plan(q, k, visual)
            sp = plan.sparsity()
            # what the plan's kernel reads: no pyramid for a binary plan without tail, block sums alone with it
            pyr = (build_kv_pyramid(k, v, tail=plan.runs_tail, block_n=plan.block_n, pooled=plan.pooled)
                   if plan.pooled or plan.runs_tail else None)
            t_plan = time_ms(lambda: method.plan(q, k, visual))
            t_plan_device = device_time_ms(lambda: method.plan(q, k, visual))
            t_kernel = time_ms(lambda: plan.run(q, k, v, pyramid=pyr))
            prefill = functools.partial(_prefill, method, q, k, v, visual)
            t_total = time_ms(prefill)
            # the same call queued back to back with the host ahead (as in a model's forward pass), against
            # cuDNN timed the same way: the device's cost of plan + kernel, without the launch latency that an
            # isolated call from an idle GPU shows (time_ms above, which flushes L2 before every call)
            t_total_device = device_time_ms(prefill)
            dense_out = cudnn(q, k, v)
            err = rel_err(plan.run(q, k, v), dense_out)
            tail = tail_columns(method, plan, q, k, v, visual, dense_out, pyr)
            s = sp.overall
            rows.append(dict(
                env, **shapes, variant=f"plan+kernel:{label}", method=repr(method), cudnn_ms=t_cudnn,
                sparsity=s, visual_sparsity=sp.visual, plan_ms=t_plan, ms=t_kernel, total_ms=t_total,
                vs_cudnn=t_cudnn / t_kernel, total_vs_cudnn=t_cudnn / t_total, plan_share_of_dense=t_plan / t_cudnn,
                plan_device_ms=t_plan_device, plan_device_share_of_dense=t_plan_device / t_cudnn,
                total_device_ms=t_total_device, cudnn_device_ms=t_cudnn_device,
                total_device_vs_cudnn=t_cudnn_device / t_total_device,
                target_ms=1.25 * (1 - s) * t_cudnn, rel_err_vs_dense=err, **tail,
            ))
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def _prefill(method, q, k, v, visual):
    """One layer's prefill as a model runs it: the method plans, then its plan runs, the pyramid built in the
    call."""
    return method.plan(q, k, visual).run(q, k, v)


def tail_columns(method, plan, q, k, v, visual, dense_out, pyr) -> dict:
    """The same plan (made without tail; ``pyr`` its prebuilt pyramid, or None for a binary one) run with tail
    aggregation (``tail=True``) against without, on a prebuilt pyramid, each making its plan lists in the call, as
    a planned call makes them: ``kernel_tail_device_ms`` (lists, the tail key's launch, the kernel) against
    ``kernel_lists_device_ms`` (lists, the kernel), so both sides do the same work but the tail's
    (``tail_overhead_device``). ``kernel_device_ms``: the plan's kernel with its lists given. The whole prefill's
    (planner, pyramid build, lists, tail key and kernel, the method with and without ``tail``:
    ``total_tail_device_ms``, ``total_tail_overhead_device``) and the error with tail (``rel_err_vs_dense_tail``).
    NaN where the planner never skips a block (``Plan.skips`` false, as PSA's default): such a plan runs without
    tail whatever it asks, the tail having nothing to add."""
    nan = float("nan")
    t_plain = device_time_ms(lambda: plan.run(q, k, v, pyramid=pyr))
    out = dict(kernel_device_ms=t_plain, kernel_lists_device_ms=nan, kernel_tail_device_ms=nan,
               tail_overhead_device=nan, total_tail_device_ms=nan, total_tail_overhead_device=nan,
               rel_err_vs_dense_tail=nan)
    tplan = replace(plan, tail=True)
    if not tplan.runs_tail:
        return out
    # a copy without lists each call: Plan.run makes them in the call, as a planned call does
    t_lists = device_time_ms(lambda: replace(plan, compiled=None).run(q, k, v, pyramid=pyr))
    pyr_t = build_kv_pyramid(k, v, tail=True, block_n=plan.block_n, pooled=plan.pooled)
    t_tail = device_time_ms(lambda: replace(tplan, compiled=None).run(q, k, v, pyramid=pyr_t))
    methods = {t: type(method)(replace(method.config, tail=t)) for t in (False, True)}
    totals = {t: device_time_ms(functools.partial(_prefill, methods[t], q, k, v, visual)) for t in (False, True)}
    out.update(kernel_lists_device_ms=t_lists, kernel_tail_device_ms=t_tail, tail_overhead_device=t_tail / t_lists - 1,
               total_tail_device_ms=totals[True], total_tail_overhead_device=totals[True] / totals[False] - 1.0,
               rel_err_vs_dense_tail=rel_err(tplan.run(q, k, v), dense_out))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768], metavar="L",
                   help="sequence lengths (default 8192 16384 32768)")
    p.add_argument("--heads-q", type=int, default=28, help="query heads (default 28, as Qwen2.5-VL-7B)")
    p.add_argument("--heads-kv", type=int, default=4, help="key/value heads (default 4)")
    p.add_argument("--head-dim", type=int, default=128, help="head dimension (default 128)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"], help="input dtype (default bfloat16)")
    p.add_argument("--block", type=int, default=128, help="query and key block size of the plans (default 128)")
    p.add_argument("--keeps", type=float, nargs="+", default=[0.5, 0.25, 0.1], metavar="FRACTION",
                   help="fractions of off-diagonal blocks kept by the random mixed-level plans (default 0.5 0.25 0.1)")
    p.add_argument("--plan-seeds", type=int, nargs="+", default=[0], metavar="N",
                   help="random plans drawn with seed L + N for each N (default 0: one plan per keep and length)")
    p.add_argument("--configs", type=lambda s: tuple(int(x) for x in s.split(",")), nargs="+", default=[(8, 3)],
                   metavar="WARPS,STAGES", help="num_warps,num_stages pairs of the Triton kernel for the all-level-1 timing, "
                   "beside the launcher's own choice of kernel (default 8,3)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the check of the random plans against the float64 reference (checked by default)")
    p.add_argument("--check-rows", type=int, default=1024,
                   help="query rows checked at each end against the reference (default 1024)")
    p.add_argument("--methods", nargs="*", default=list(METHOD_SETTINGS), choices=list(METHOD_SETTINGS),
                   help=f"planners timed with the kernel on video-like inputs; give none to skip "
                   f"(default: {' '.join(METHOD_SETTINGS)})")
    p.add_argument("--families", nargs="+", default=["diffuse", "medium", "peaked"], choices=list(FAMILIES),
                   help="input families of the planners' part, as in bench pareto (default: diffuse medium peaked; "
                   "medium is the input this part used alone before)")
    p.add_argument("--input-seeds", type=int, nargs="+", default=[0], metavar="N",
                   help="the planners' part draws its video-like inputs with seed L + 1000 N for each N (default 0)")
    p.add_argument("--skip-random", action="store_true", help="skip the all-level-1 and random-plan part")
    p.add_argument("--skip-levels", action="store_true", help="skip the per-level marginal cost part")
    add_output_arguments(p, "kernel")


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first bad flag (called before anything runs)."""
    from vlmsparse.kernels.blocks import VALID_BLOCK_SIZES

    from .common import check_writable_output, require_head_dim, require_heads, require_positive

    require_positive(args, "lengths", "heads_q", "heads_kv", "head_dim", "check_rows")
    require_heads(args.heads_q, args.heads_kv)
    require_head_dim(args.head_dim)
    if args.block not in VALID_BLOCK_SIZES:
        raise ValueError(f"--block must be one of {VALID_BLOCK_SIZES}, got {args.block}")
    if any(seed < 0 for seed in args.plan_seeds):
        raise ValueError(f"--plan-seeds are non-negative integers; got {args.plan_seeds}")
    if any(seed < 0 for seed in args.input_seeds):
        raise ValueError(f"--input-seeds are non-negative integers; got {args.input_seeds}")
    if any(not 0 < keep <= 1 for keep in args.keeps):
        raise ValueError(f"--keeps are shares of blocks kept, in (0, 1]; got {args.keeps}")
    if any(len(c) != 2 or min(c) < 1 for c in args.configs):
        raise ValueError(f"--configs are num_warps,num_stages pairs of positive integers (e.g. 8,3); got {args.configs}")
    check_writable_output(args)


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():  # before the run folder is made
        raise SystemExit("the kernel benchmark needs a CUDA GPU")
    output = RunOutput(args, "kernel")
    rows = output.rows  # each row saved to the run folder as it is measured
    if not args.skip_random:
        run_random(args, rows)
        print_table(rows, ["L", "variant", "plan_seed", "sparsity", "ms", "device_ms", "tflops", "vs_cudnn", "target_ms",
                           "tail_overhead", "tail_overhead_device", "rel_err_vs_ref", "rel_err_vs_cudnn"])
    if not args.skip_levels:
        first = len(rows)
        lrows = run_level_costs(args, rows)[first:]
        print_table(lrows, ["L", "variant", "device_ms", "skip_device_ms", "marginal_cost", "target_cost", "met",
                            "ms", "skip_ms", "marginal_cost_eager", "tail_overhead", "tail_overhead_device",
                            "rel_err_vs_ref"])
    if args.methods:
        first = len(rows)
        mrows = run_methods(args, rows)[first:]
        print_table(mrows, ["L", "family", "variant", "sparsity", "plan_ms", "plan_device_ms", "ms", "total_ms", "cudnn_ms",
                            "total_vs_cudnn", "total_device_vs_cudnn", "plan_share_of_dense",
                            "plan_device_share_of_dense", "target_ms", "rel_err_vs_dense"])
        print_table(mrows, ["L", "family", "variant", "sparsity", "kernel_device_ms", "kernel_tail_device_ms",
                            "tail_overhead_device", "total_tail_overhead_device", "rel_err_vs_dense",
                            "rel_err_vs_dense_tail"])
    print(output.finish())  # results/kernel.csv (--results): the whole run's rows once it has ended
    return 0
