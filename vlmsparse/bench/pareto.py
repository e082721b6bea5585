"""The time vs error frontier of every planner on the one kernel, over several input families (CUDA GPU).

Each method's knob is swept (PSA's cumulative thresholds, XAttention's tau, SpargeAttn's thresholds) on
video-like inputs of several families that differ in how concentrated attention is (``diffuse``, ``medium``,
``peaked``, plus ``mixed``: heads of very different sharpness in one layer), each at several seeds. For every
setting the whole per-layer cost (planning + kernel, the pyramid built in the call) is timed against SDPA's
cuDNN backend on the same inputs in the same run, and the output is compared with dense attention (relative
L2 error) together with the attention recall (the share of dense softmax mass on kept blocks, over a sample of
query rows). Rows go to a new run folder (``--out`` to choose it); ``--results`` also appends them to
``results/pareto.csv``. A PNG of error against speed-up, one line per method and input family, is drawn beside
each CSV by :func:`vlmsparse.eval.plots.plot_pareto`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import torch

from .common import RunOutput, add_output_arguments, environment, print_table, sdpa_dense, time_ms

#: Shown under ``--help``; every example needs a CUDA GPU.
EXAMPLES = """\
examples:
  python -m vlmsparse.bench pareto                                  # 16k and 32k tokens, three families, two seeds
  python -m vlmsparse.bench pareto --lengths 16384 --seeds 0 --lines psa xattention
  python -m vlmsparse.bench pareto --results                        # also into results/pareto.csv and its PNG
  python -m vlmsparse.bench pareto --inputs runs/qkv-7b.pt          # a model's own q/k/v (bench capture)
"""

#: Input families: keyword arguments of :func:`vlmsparse.bench.synthetic.video_qkv`. They differ in how sharp
#: the query heads are (the spread of attention) and how local the content is; none is fitted to a method.
FAMILIES: dict[str, dict[str, Any]] = {
    "diffuse": dict(sharpness=(0.2, 0.6), local_weight=0.4, noise=0.6),
    "medium": dict(sharpness=(0.5, 1.5), local_weight=0.6, noise=0.4),
    "peaked": dict(sharpness=(1.2, 2.5), local_weight=0.8, noise=0.3),
    "mixed": dict(sharpness=(0.1, 2.5), local_weight=0.6, noise=0.4),
}


def _scaled(base: tuple[float, ...], c: float) -> tuple[float, ...]:
    """Thresholds ``1 - c (1 - t)``: ``c < 1`` keeps more, ``c > 1`` less; ``c = 1`` is ``base``."""
    return tuple(round(min(1.0, max(0.0, 1.0 - c * (1.0 - t))), 4) for t in base)


@dataclass(frozen=True)
class Setting:
    label: str  # the line it belongs to in the plot
    method: str
    knob: str
    overrides: tuple[tuple[str, Any], ...]

    def build(self):
        from vlmsparse.methods import get_method

        return get_method(self.method, **dict(self.overrides))


def default_settings() -> list[Setting]:
    """The sweep: each method's knob over a range that spans sparsity about 0.2 to 0.9 on video-like inputs."""
    from vlmsparse.methods.psa import PUBLIC_THRESHOLDS, PSAConfig

    out: list[Setting] = []
    default = PSAConfig()  # exact blocks, then level 8 for the rest, on the stride-16 estimate
    for c in (2.5, 2.0, 1.5, 1.0, 0.75, 0.45, 0.25):  # 2.5: as far as XAttention's tau 0.5 on diffuse inputs
        t = _scaled(default.thresholds, c)
        out.append(Setting("psa", "psa", f"thresholds={list(t)},stride={default.stride}", (("thresholds", t),)))
    for c in (3.0, 2.0, 1.5, 1.0, 0.6, 0.3):  # the public thresholds on the stride-8 estimate (preset public-thresholds)
        t = _scaled(PUBLIC_THRESHOLDS, c)
        out.append(Setting("psa-public", "psa", f"thresholds={list(t)},stride=8", (("thresholds", t), ("stride", 8))))
    all_levels = (0.6, 0.75, 0.85, 0.95)  # a shape that also uses level 8
    for c in (4.0, 2.5, 1.6, 1.0, 0.6, 0.3):
        t = _scaled(all_levels, c)
        out.append(Setting("psa-all-levels", "psa", f"thresholds={list(t)},stride=8",
                           (("thresholds", t), ("stride", 8))))
    # exact blocks up to the same cumulative mass as XAttention's tau (same stride 16 estimate), then the next
    # 40% of the mass left at level 4 and the 30% after it at level 8: XAttention's plan with pooled blocks added
    def exact_first(tau: float) -> tuple[float, ...]:
        return (tau, tau, round(1 - 0.6 * (1 - tau), 4), round(1 - 0.3 * (1 - tau), 4))

    for tau in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        t = exact_first(tau)
        out.append(Setting("psa-exact", "psa", f"thresholds={list(t)},stride=16", (("thresholds", t), ("stride", 16))))
    # the same, with the level-4 and level-8 blocks that have no neighbour of their level (read as narrow tiles of
    # their own, each costing several times its share) skipped, or made exact
    for lone in ("skip", "exact"):
        for tau in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):  # "exact" is slower per tau: lower taus reach 2x
            t = exact_first(tau)
            out.append(Setting(f"psa-exact-lone-{lone}", "psa", f"thresholds={list(t)},stride=16,lone_pooled={lone}",
                               (("thresholds", t), ("stride", 16), ("lone_pooled", lone))))
    # and with tail aggregation: the keys a row skips folded into one mean key (one row of sums computed before
    # the launch per program, whatever the number of skipped blocks)
    # (these last lines and XAttention's share one finer grid of tau, steps of 0.025 from 0.6 to 0.95: a few
    # percent of time decides a budget, and a coarse grid leaves the choice to where its points happen to fall)
    fine = (0.3, 0.4, 0.5, 0.55, 0.6, 0.625, 0.65, 0.675, 0.7, 0.725, 0.75, 0.775, 0.8, 0.825, 0.85, 0.875, 0.9,
            0.925, 0.95, 0.98)
    for tau in fine:
        t = exact_first(tau)
        out.append(Setting("psa-exact-lone-exact-tail", "psa",
                           f"thresholds={list(t)},stride=16,lone_pooled=exact,tail=True",
                           (("thresholds", t), ("stride", 16), ("lone_pooled", "exact"), ("tail", True))))
    # exact blocks up to tau and the rest folded into the tail key, no pooled level: where attention is
    # concentrated, pooled blocks buy less than their time
    for tau in fine:
        t = (tau,) * 4
        out.append(Setting("psa-exact-tail", "psa", f"thresholds={list(t)},stride=16,tail=True",
                           (("thresholds", t), ("stride", 16), ("tail", True))))
    # exact blocks up to tau and every other visible block at level 8, a level-8 block with no level-8 neighbour
    # made exact: every key is seen, at least through its level-8 mean, and level 8 comes in spans (a span of
    # eight blocks is one tile step, while a lone level-8 block costs about half an exact one); no tail, since
    # nothing visible is skipped
    # 22 points, denser where 1.5x-2x falls, and near dense the same points as XAttention's grid (0.9, 0.925, 0.95,
    # 0.98): with 0.9 and 0.95 alone the 1.1x budget fell between two points of this line and on one of XAttention's
    for tau in (0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.525, 0.55, 0.575, 0.6, 0.625, 0.65, 0.7, 0.75, 0.8, 0.85,
                0.9, 0.925, 0.95, 0.98):
        t = (tau, tau, tau, 1.0)
        out.append(Setting("psa-exact-l8", "psa", f"thresholds={list(t)},stride=16,lone_pooled=exact",
                           (("thresholds", t), ("stride", 16), ("lone_pooled", "exact"))))
    for tau in fine:
        out.append(Setting("xattention", "xattention", f"threshold={tau}", (("threshold", tau),)))
    for cdf in (0.5, 0.7, 0.85, 0.95, 0.98):
        out.append(Setting("sparge", "sparge", f"sim_threshold=0.0,cdf_threshold={cdf}",
                           (("sim_threshold", 0.0), ("cdf_threshold", cdf))))
    return out


def sampled_rows(length: int, n: int, device) -> torch.Tensor:
    """``n`` query rows spread over the sequence (the last one included)."""
    return torch.linspace(0, length - 1, n, device=device).round().long().unique()


def dense_block_mass(q, k, rows: torch.Tensor, block_n: int) -> torch.Tensor:
    """Dense causal softmax mass per key block for the query ``rows``: float ``[B, Hq, R, nKB]``."""
    b, hq, length, d = q.shape
    group = hq // k.shape[1]
    kk = k.float().repeat_interleave(group, 1)
    s = torch.einsum("bhrd,bhld->bhrl", q[:, :, rows].float(), kk) / math.sqrt(d)
    s = s.masked_fill(torch.arange(length, device=q.device)[None, :] > rows[:, None], float("-inf"))
    p = torch.softmax(s, -1)
    n_kb = -(-length // block_n)
    p = torch.nn.functional.pad(p, (0, n_kb * block_n - length))
    return p.reshape(b, hq, len(rows), n_kb, block_n).sum(-1)


def recall(levels: torch.Tensor, mass: torch.Tensor, rows: torch.Tensor, block_m: int) -> float:
    """Share of the dense mass of the sampled rows on blocks the plan keeps (pooled blocks count as kept)."""
    lv = levels
    if lv.shape[1] != mass.shape[1]:
        lv = lv.repeat_interleave(mass.shape[1] // lv.shape[1], 1)
    kept = (lv[:, :, rows // block_m] > 0).float()
    return float((mass * kept).sum() / mass.sum())


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        raise SystemExit("the pareto benchmark needs a CUDA GPU (times are what it measures)")
    env = environment()
    cudnn = sdpa_dense("cudnn")
    settings = [s for s in default_settings() if s.label in args.lines]
    # the run folder's CSV, saved after each row (a run cut short keeps what it measured); rows of other runs kept
    output = RunOutput(args, "pareto")
    rows = output.rows
    for family, seed, q, k, v, layout in _inputs(args):  # one at a time: generated, or a captured layer
        visual = layout[0]
        total = q.shape[2]
        dense = cudnn(q, k, v)
        t_dense = time_ms(lambda: cudnn(q, k, v))
        qrows = sampled_rows(total, args.recall_rows, q.device)
        mass = {}
        for s in settings:
            method = s.build()
            plan = method.plan(q, k, *layout)
            out = plan.run(q, k, v)
            err = float((out.double() - dense.double()).norm() / dense.double().norm())

            def layer():
                p_ = method.plan(q, k, *layout)
                return p_.run(q, k, v)

            t_total = time_ms(layer)
            t_plan = time_ms(lambda: method.plan(q, k, *layout))
            if plan.block_n not in mass:
                mass[plan.block_n] = dense_block_mass(q, k, qrows, plan.block_n)
            sp = plan.sparsity()
            rows.append(dict(
                env, B=1, Hq=q.shape[1], Hkv=k.shape[1], L=total, visual_tokens=int(visual.sum()), D=q.shape[3],
                dtype="bfloat16", family=family, seed=seed, line=s.label, method=s.method, knob=s.knob,
                sparsity=sp.overall, visual_sparsity=sp.visual, dense_ms=t_dense, plan_ms=t_plan,
                time_ms=t_total, ratio_to_dense=t_dense / t_total, rel_error=err,
                recall=recall(plan.levels, mass[plan.block_n], qrows, plan.block_m),
            ))
            r = rows[-1]
            print(f"L={total} {family} seed={seed} {s.label} {s.knob}: sparsity {r['sparsity']:.3f} "
                  f"speed-up {r['ratio_to_dense']:.2f}x err {err:.4f} recall {r['recall']:.4f}", flush=True)
        del q, k, v, dense
        torch.cuda.empty_cache()
    from vlmsparse.eval.leaderboard import read_rows
    from vlmsparse.eval.plots import plot_pareto

    print_table(frontier_summary(rows), ["L", "family", "budget", "psa_err", "psa_line", "xattention_err", "psa_ahead"])
    print(output.finish())  # results/pareto.csv (--results) gets the rows added
    for path in output.paths:
        print(f"plot of {path}'s rows: {plot_pareto(read_rows(path), path.with_suffix('.png'))}")
    return 0


def _inputs(args: argparse.Namespace, device: str = "cuda"):
    """``(family, seed, q, k, v, (visual, interleaved text))`` on ``device`` in bfloat16, one input at a time: each
    length, family and seed of the generated inputs, or each layer of each ``--inputs`` capture (family ``<file stem>:L<layer>``)."""
    if args.inputs:
        from vlmsparse.model.capture import load_capture

        for path in args.inputs:
            capture = load_capture(path)
            seed = capture.meta.get("seed", 0)
            for layer in capture.layers:
                q, k, v = (t.to(device, torch.bfloat16) for t in (layer.q, layer.k, layer.v))
                inter = None if layer.interleaved_text is None else layer.interleaved_text.to(device)
                yield f"{capture.name}:L{layer.layer}", seed, q, k, v, (layer.visual.to(device), inter)
        return
    from .kernel import VIDEO_GRIDS
    from .synthetic import video_qkv

    for length in args.lengths:
        frames, height, width = VIDEO_GRIDS.get(length, (max(1, length // 256), 16, 16))
        for family in args.families:
            for seed in args.seeds:
                q, k, v, visual = video_qkv(frames, height, width, device=device, dtype=torch.bfloat16,
                                            seed=1000 * seed + length, **FAMILIES[family])
                total = q.shape[2]
                if total != length and family == args.families[0] and seed == args.seeds[0]:
                    print(f"asked for {length} tokens: {frames} frames of {height}x{width} visual tokens and "
                          f"{total - frames * height * width} text tokens make {total} (the L column)", flush=True)
                yield family, seed, q, k, v, (visual, None)


PSA_LINES = ("psa", "psa-public", "psa-all-levels", "psa-exact", "psa-exact-lone-skip", "psa-exact-lone-exact",
             "psa-exact-lone-exact-tail", "psa-exact-tail", "psa-exact-l8")


def best_error_within(rows: list[dict], line: str, speedup: float) -> float:
    """The lowest error among a line's settings at least ``speedup`` times faster than dense (``nan``: none)."""
    errs = [r["rel_error"] for r in rows if r["line"] == line and r["ratio_to_dense"] >= speedup]
    return min(errs) if errs else float("nan")


def frontier_summary(rows: list[dict], budgets=(1.1, 1.25, 1.5, 1.75, 2.0)) -> list[dict]:
    """At each time budget (speed-up over dense), the best PSA error (over its lines, naming the line) against
    XAttention's, per length, family and seed. PSA is ahead where its error is lower, or where it has a setting that
    fast and XAttention has none; neither having one leaves the cell empty."""
    out = []
    keys = sorted({(r["L"], r["family"], r["seed"]) for r in rows})
    for length, family, seed in keys:
        sub = [r for r in rows if (r["L"], r["family"], r["seed"]) == (length, family, seed)]
        for budget in budgets:
            psa, line = min(((best_error_within(sub, ln, budget), ln) for ln in PSA_LINES),
                            key=lambda x: math.inf if math.isnan(x[0]) else x[0])
            xat = best_error_within(sub, "xattention", budget)
            if math.isnan(psa):
                ahead, line = ("" if math.isnan(xat) else "no"), ""
            else:
                ahead = "yes" if math.isnan(xat) or psa < xat else "no"
            out.append(dict(L=length, family=f"{family}/s{seed}", budget=f"{budget}x", psa_err=psa, psa_line=line,
                            xattention_err=xat, psa_ahead=ahead))
    return out


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first bad flag (called before anything runs)."""
    from .common import check_inputs, check_writable_output, require_positive

    require_positive(args, "lengths", "recall_rows")
    check_inputs(args, _GENERATED_DEFAULTS)
    check_writable_output(args)


#: Defaults of the flags that choose generated inputs (refused beside --inputs).
_GENERATED_DEFAULTS = {"lengths": [16384, 32768], "families": ["diffuse", "medium", "peaked"], "seeds": [0, 1]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    p.add_argument("--lengths", type=int, nargs="+", default=list(_GENERATED_DEFAULTS["lengths"]), metavar="L",
                   help="lengths of the video-like inputs, as frames of 16 x 16 visual tokens plus 96 text tokens "
                   "(default 16384 32768)")
    p.add_argument("--families", nargs="+", default=list(_GENERATED_DEFAULTS["families"]), choices=list(FAMILIES),
                   help="input families, by how concentrated attention is (default: diffuse medium peaked)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(_GENERATED_DEFAULTS["seeds"]),
                   help="input seeds per family (default 0 1)")
    p.add_argument("--inputs", nargs="+", default=None, metavar="FILE",
                   help="captured q/k/v (python -m vlmsparse.bench capture) instead of the generated families: each "
                   "layer of each file is an input of its own (family FILE-STEM:L<layer>)")
    lines = [*PSA_LINES, "xattention", "sparge"]
    p.add_argument("--lines", nargs="+", default=lines, choices=lines,
                   help=f"method lines to sweep (default: {' '.join(lines)})")
    p.add_argument("--recall-rows", type=int, default=64,
                   help="query rows sampled for the attention recall (default 64)")
    add_output_arguments(p, "pareto")
