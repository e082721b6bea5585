"""Fidelity sweep: sparsity vs output error and attention recall of each planner on synthetic or captured q/k/v.

For each sequence length, synthetic video-like inputs (:func:`vlmsparse.bench.synthetic.video_qkv`), or with
``--inputs`` each layer of a model's captured attention inputs (``python -m vlmsparse.bench capture``), are
planned by every setting of the sweep (PSA thresholds scaled, with and without tail aggregation, and its
Video-MME preset; XAttention's tau; SpargeAttn's CDF threshold, with its similarity test at the default and
switched off), the plan is run, and one CSV row per setting records:

- ``sparsity`` / ``visual_sparsity``: the plan's overall and visual x visual sparsity (a block at level p costs
  1/p, a skipped one 0, over the causal block grid; see :mod:`vlmsparse.methods.sparsity`);
- ``rel_l2_error``: ``||O_plan - O_dense|| / ||O_dense||`` over all heads, rows and channels;
- ``recall``: the share of dense softmax mass on kept blocks (pooled blocks count as kept), averaged over
  query rows and heads;
- ``plan_ms``: planning time (meaningful on CUDA only).

A requested length becomes whole frames of ``height x width`` visual tokens plus the text tokens, so the
length measured (the ``seq_len`` column) differs from the one asked for (1024 -> 1120 at the defaults); the
run says so for every length.

Backends for the sparse output: ``triton`` (CUDA; the dense output then also comes from the kernel, with an
all-level-1 plan, so both carry the same rounding), ``reference`` (``pyramid_attention_ref``, float64, the
definition; slow) and ``float32`` (the reference with ``compute_dtype=torch.float32``, the same maths
in float32, tested against the reference; the CPU default because the reference takes tens of seconds per
setting at 4k tokens). On CPU the dense output is a float32 softmax.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmsparse.argtypes import device as device_arg, require_available
from vlmsparse.kernels.blocks import cdiv
from vlmsparse.methods import Plan, get_method

from .common import add_output_arguments, output_csvs, print_table
from .synthetic import video_qkv

__all__ = ["Setting", "default_sweep", "sparsity_summary", "dense_attention_stats", "evaluate_plan", "add_arguments", "run", "COLUMNS"]

#: Shown under ``--help``: the first two run on a CPU in a few minutes, the last needs a CUDA GPU.
EXAMPLES = """\
examples:
  python -m vlmsparse.bench fidelity --seq-lens 1024 --core-seq-lens --methods dense psa xattention
  python -m vlmsparse.bench fidelity --seq-lens 2048 --core-seq-lens --heads-q 2 --methods psa sparge --out runs/fid
  python -m vlmsparse.bench fidelity --device cuda --results     # the full sweep, into results/fidelity.csv
  python -m vlmsparse.bench fidelity --inputs runs/qkv.pt        # on a model's own q/k/v (bench capture)
"""

COLUMNS = [
    "method", "setting", "knob", "knob_value", "tail", "input", "seq_len", "frames", "grid", "text_tokens",
    "sparsity", "visual_sparsity", "rel_l2_error", "recall", "plan_ms",
    "batch", "heads_q", "heads_kv", "head_dim", "block_m", "block_n", "dtype", "backend", "device", "date", "seed",
]

BACKENDS = ("triton", "reference", "float32")
#: The ``input`` column of rows on generated inputs.
SYNTHETIC = "synthetic"
#: Flags that shape the generated inputs, with their defaults: refused beside --inputs, which brings its own.
_SYNTHETIC_FLAGS = {"seq_lens": None, "core_seq_lens": None, "heads_q": None, "heads_kv": None, "head_dim": 128,
                    "height": 16, "width": 16, "text_prefix": 64, "text_suffix": 32, "seed": 0}
_GRAIN = 16  # token granularity of the dense attention mass map (divides every block size)
PSA_BASE = (0.7, 0.8, 0.9, 0.9)


@dataclass
class Setting:
    """One point of the sweep: a method, its overrides, and the knob it varies."""

    method: str
    overrides: dict[str, Any]
    knob: str
    knob_value: Any
    core: bool = False  # also run at the lengths where only a reduced sweep runs
    label: str = field(default="")

    def name(self) -> str:
        return self.label or f"{self.method} {self.knob}={self.knob_value}"


def default_sweep() -> list[Setting]:
    """The knobs swept for every method (``core`` marks the reduced sweep for long CPU runs)."""
    out: list[Setting] = [Setting("dense", {}, "none", "", core=True, label="dense")]
    # PSA's own default (exact blocks, then level 8 for the rest) at three tau, then the public code's thresholds
    for tau in (0.35, 0.55, 0.75):
        out.append(Setting("psa", {"thresholds": (tau, tau, tau, 1.0)}, "exact_share", tau, core=tau == 0.55,
                           label="psa default" if tau == 0.55 else ""))
    for tail in (False, True):
        for scale in (0.5, 0.7, 0.85, 1.0, 1.1):
            th = tuple(round(min(1.0, t * scale), 4) for t in PSA_BASE)
            out.append(Setting("psa", {"thresholds": th, "tail": tail, "lone_pooled": "keep"}, "threshold_scale", scale,
                               core=scale in (0.7, 1.0)))
        out.append(Setting("psa", {"preset": "videomme-0.65", "tail": tail}, "preset", "videomme-0.65", core=True))
    for tau in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
        out.append(Setting("xattention", {"threshold": tau}, "threshold", tau, core=tau in (0.8, 0.9)))
    for cdf in (0.9, 0.98):
        out.append(Setting("sparge", {"cdf_threshold": cdf}, "cdf_threshold", cdf, core=cdf == 0.98,
                           label=f"sparge sim_threshold=0.6 cdf_threshold={cdf}"))
    for cdf in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98):
        out.append(Setting("sparge", {"cdf_threshold": cdf, "sim_threshold": -1.0}, "cdf_threshold", cdf,
                           core=cdf == 0.9, label=f"sparge sim_threshold=-1 cdf_threshold={cdf}"))
    return out


def dense_attention_stats(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, row_chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal dense attention in float32: output ``[B, Hq, L, D]`` and the softmax mass map.

    The mass map ``[B, Hq, ceil(Lq/16), ceil(Lk/16)]`` sums the dense probabilities of each 16 x 16 tile
    (rows summed), so the mass a plan keeps is a sum over its kept blocks' tiles.
    """
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d)
    kf, vf = k.float(), v.float()
    out = torch.empty(b, hq, lq, d, dtype=torch.float32, device=q.device)
    nkg = cdiv(lk, _GRAIN)
    mass = torch.zeros(b, hq, cdiv(lq, _GRAIN), nkg, dtype=torch.float32, device=q.device)
    row_chunk = max(_GRAIN, row_chunk // _GRAIN * _GRAIN)
    keys = torch.arange(lk, device=q.device)
    for r0 in range(0, lq, row_chunk):
        r1 = min(r0 + row_chunk, lq)
        qc = q[:, :, r0:r1].float().reshape(b, hkv, group * (r1 - r0), d)
        logits = torch.matmul(qc, kf.transpose(-1, -2)).reshape(b, hq, r1 - r0, lk) * scale
        rows = torch.arange(r0, r1, device=q.device)
        logits = logits.masked_fill(keys[None, :] > (rows + lk - lq)[:, None], float("-inf"))
        p = torch.softmax(logits, dim=-1)
        out[:, :, r0:r1] = torch.matmul(p.reshape(b, hkv, group * (r1 - r0), lk), vf).reshape(b, hq, r1 - r0, d)
        p = torch.nn.functional.pad(p, (0, nkg * _GRAIN - lk))
        tiles = p.reshape(b, hq, r1 - r0, nkg, _GRAIN).sum(-1)
        g0 = r0 // _GRAIN
        n_rows = r1 - r0
        pad_rows = cdiv(n_rows, _GRAIN) * _GRAIN - n_rows
        tiles = torch.nn.functional.pad(tiles, (0, 0, 0, pad_rows))
        mass[:, :, g0 : g0 + cdiv(n_rows, _GRAIN)] = tiles.reshape(b, hq, -1, _GRAIN, nkg).sum(3)
    return out, mass


def plan_recall(plan: Plan, mass: torch.Tensor, heads_q: int) -> float:
    """Share of the dense softmax mass on the plan's kept blocks (any level > 0), per row, averaged."""
    kept = (plan.levels > 0).float()
    if kept.shape[1] != heads_q:
        kept = kept.repeat_interleave(heads_q // kept.shape[1], dim=1)
    kept = kept.repeat_interleave(plan.block_m // _GRAIN, 2).repeat_interleave(plan.block_n // _GRAIN, 3)
    kept = kept[:, :, : mass.shape[2], : mass.shape[3]]
    rows = mass.shape[0] * heads_q * plan.q_len
    return float((kept * mass).sum()) / rows


def evaluate_plan(
    plan: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dense_out: torch.Tensor, mass: torch.Tensor, backend: str
) -> dict[str, float]:
    """Run the plan and compare it with dense attention."""
    if backend == "triton":
        out = plan.run(q, k, v)
    elif backend == "reference":
        from vlmsparse.kernels.reference import pyramid_attention_ref

        out = pyramid_attention_ref(q, k, v, plan.levels, **plan.kernel_kwargs())
    elif backend == "float32":
        from vlmsparse.kernels.reference import pyramid_attention_ref

        out = pyramid_attention_ref(q, k, v, plan.levels, compute_dtype=torch.float32, row_chunk=512,
                                    **plan.kernel_kwargs())
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    diff = (out.double() - dense_out.double()).norm()
    s = plan.sparsity()
    return {
        "sparsity": s.overall,
        "visual_sparsity": s.visual if s.visual is not None else float("nan"),
        "rel_l2_error": float(diff / dense_out.double().norm()),
        "recall": plan_recall(plan, mass, q.shape[1]),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def _grid_for(seq_len: int, height: int, width: int, text: int) -> int:
    return max(1, round((seq_len - text) / (height * width)))


def _row_key(row: dict[str, Any], by_setting: bool = False) -> tuple[str, ...]:
    """What a rerun replaces: device, backend, input (rows from before the column: synthetic) and length; with
    ``by_setting``, also the setting and whether it aggregates the tail (one row for one row)."""
    key = (str(row.get("device")), str(row.get("backend")), str(row.get("input") or SYNTHETIC), str(row.get("seq_len")))
    return key + (str(row.get("setting")), str(row.get("tail"))) if by_setting else key


def _write_rows(path: Path, rows: list[dict[str, Any]], by_setting: bool = False) -> None:
    """Write ``rows`` to ``path``, replacing earlier rows of the same device, backend, input and sequence length
    (with ``by_setting``, only those of the same setting too: a run cut short in a folder that holds an earlier
    run's rows replaces only the rows it measured again).

    The folder is locked while the file is read and replaced, and the new file is written under a name of this
    process's own first (:func:`vlmsparse.bench.common.write_csv`'s way): runs that share a folder or
    ``results/fidelity.csv`` never lose each other's rows."""
    from vlmsparse.eval.leaderboard import read_rows, write_rows
    from vlmsparse.runs import folder_lock

    from .common import cell_as_is

    replaced = {_row_key(r, by_setting) for r in rows}
    with folder_lock(path):
        kept = [r for r in read_rows(path) if _row_key(r, by_setting) not in replaced]
        write_rows(path, kept + rows, COLUMNS, cell=cell_as_is)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's flags (defaults differ between CPU and CUDA, as each help says)."""
    parser.add_argument("--device", default="cpu", type=device_arg, help="cpu or cuda (default cpu)")
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="how the sparse output is computed (default: triton on cuda, float32 on cpu)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=None, metavar="N",
                        help="lengths with the full sweep, each rounded to whole frames plus the text tokens "
                        "(default: cpu 1024 2048, cuda 4096 8192 16384)")
    parser.add_argument("--core-seq-lens", type=int, nargs="*", default=None, metavar="N",
                        help="lengths with the reduced sweep (the settings marked core); give none to skip "
                        "(default: cpu 4096, cuda none)")
    parser.add_argument("--heads-q", type=int, default=None, help="query heads (default: cpu 7, cuda 28)")
    parser.add_argument("--heads-kv", type=int, default=None, help="key/value heads (default: cpu 1, cuda 4)")
    parser.add_argument("--head-dim", type=int, default=128, help="head dimension (default 128)")
    parser.add_argument("--height", type=int, default=16, help="rows of visual tokens per frame (default 16)")
    parser.add_argument("--width", type=int, default=16, help="columns of visual tokens per frame (default 16)")
    parser.add_argument("--text-prefix", type=int, default=64, help="text tokens before the video (default 64)")
    parser.add_argument("--text-suffix", type=int, default=32, help="text tokens after the video (default 32)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="input dtype (default: float32 on cpu, bfloat16 on cuda)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs (default 0)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="only these methods: dense psa xattention sparge (default: all)")
    parser.add_argument("--inputs", nargs="+", default=None, metavar="FILE",
                        help="captured q/k/v (python -m vlmsparse.bench capture) instead of the generated inputs: every "
                        "layer of each file gets the full sweep")
    add_output_arguments(parser, "fidelity")


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first bad flag (called before anything runs)."""
    from vlmsparse.methods import available_methods

    from .common import check_inputs, check_writable_output, require_head_dim, require_heads, require_positive

    require_positive(args, "seq_lens", "core_seq_lens", "heads_q", "heads_kv", "head_dim", "height", "width")
    require_positive(args, "text_prefix", "text_suffix", allow_zero=True)
    require_heads(args.heads_q or 7, args.heads_kv or 1)
    require_head_dim(args.head_dim)
    require_available(args.device)
    unknown = sorted(set(args.methods or []) - set(available_methods()))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; available: {available_methods()}")
    check_inputs(args, _SYNTHETIC_FLAGS)
    check_writable_output(args)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    backend = args.backend or ("triton" if cuda else "float32")
    if backend == "triton" and not cuda:
        raise SystemExit("--backend triton needs --device cuda")
    seq_lens = args.seq_lens or ([4096, 8192, 16384] if cuda else [1024, 2048])
    core_lens = args.core_seq_lens if args.core_seq_lens is not None else ([] if cuda else [4096])
    heads_q = args.heads_q or (28 if cuda else 7)
    heads_kv = args.heads_kv or (4 if cuda else 1)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    dev_name = _device_name(device)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    sweep = [s for s in default_sweep() if args.methods is None or s.method in args.methods]
    paths = output_csvs(args, "fidelity")
    rows: list[dict[str, Any]] = []
    t_start = time.time()
    for name, q, k, v, layout, shape, core_only in _inputs(args, seq_lens, core_lens, heads_q, heads_kv, device, dtype):
        length = q.shape[2]
        dense_ref, mass = dense_attention_stats(q, k, v)
        if cuda:
            dense_plan = get_method("dense").plan(q, k, *layout)
            dense_out = evaluate_dense_kernel(dense_plan, q, k, v)
        else:
            dense_out = dense_ref
        del dense_ref
        for setting in sweep:
            if core_only and not setting.core:
                continue
            method = get_method(setting.method, **setting.overrides)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            plan = method.plan(q, k, *layout)
            if cuda:
                torch.cuda.synchronize()
            plan_ms = (time.perf_counter() - t0) * 1e3
            metrics = evaluate_plan(plan, q, k, v, dense_out, mass, backend)
            cfg = method.config
            row = {
                "method": setting.method, "setting": setting.name(), "knob": setting.knob,
                "knob_value": setting.knob_value, "tail": cfg.tail, "input": name, "seq_len": length, **shape,
                **{key: round(val, 6) for key, val in metrics.items()}, "plan_ms": round(plan_ms, 2),
                "batch": 1, "heads_q": q.shape[1], "heads_kv": k.shape[1], "head_dim": q.shape[3],
                "block_m": cfg.block_m, "block_n": cfg.block_n, "dtype": str(dtype).replace("torch.", ""),
                "backend": backend, "device": dev_name, "date": date,
            }
            rows.append(row)
            print(
                f"{'' if name == SYNTHETIC else name + ' '}L={length:6d} {setting.name():48s} tail={int(cfg.tail)} sparsity={row['sparsity']:.3f} "
                f"visual={row['visual_sparsity']:.3f} err={row['rel_l2_error']:.4f} recall={row['recall']:.4f} "
                f"[{time.time() - t_start:.0f}s]",
                flush=True,
            )
            # the run folder's table after each row, replacing row by row: a run cut short keeps its rows and those
            # of an earlier run in the same folder that it had not reached
            _write_rows(paths[0], rows, by_setting=True)
        for path in paths[1:]:  # results/fidelity.csv (--results) after each length: its rows there are replaced
            _write_rows(path, rows)  # only by a whole length's
    summary = sparsity_summary(rows)
    if summary:
        print("\nlowest relative error at each sparsity budget (nan: no setting that sparse)")
        print_table(summary, ["input", "L", "sparsity", *[m for m in summary[0] if m not in ("input", "L", "sparsity")]])
    print(f"wrote {len(rows)} rows to {', '.join(str(p) for p in paths)}")
    if any(r["method"] != "dense" for r in rows):
        from vlmsparse.eval.leaderboard import read_rows
        from vlmsparse.eval.plots import plot_fidelity

        for path in paths:  # each CSV's plot shows every row it holds
            print(f"plot of {path}'s rows: {plot_fidelity(read_rows(path), path.with_suffix('.png'))}")
    print(json.dumps({"device": dev_name, "backend": backend, "seconds": round(time.time() - t_start, 1)}))
    return 0


def _inputs(args, seq_lens, core_lens, heads_q, heads_kv, device, dtype):
    """``(input name, q, k, v, (visual, interleaved text), shape columns, core only)`` for each input: the generated
    lengths, or each layer of each ``--inputs`` file."""
    if args.inputs:
        from vlmsparse.model.capture import load_capture

        for path in args.inputs:
            capture = load_capture(path)
            for layer in capture.layers:
                visual = layer.visual.to(device)
                text = int(visual.shape[1] - visual.sum())
                shape = {"frames": capture.meta.get("frames", ""), "grid": "", "text_tokens": text,
                         "seed": capture.meta.get("seed", "")}
                inter = None if layer.interleaved_text is None else layer.interleaved_text.to(device)
                yield (f"{capture.name}:L{layer.layer}", layer.q.to(device, dtype), layer.k.to(device, dtype),
                       layer.v.to(device, dtype), (visual, inter), shape, False)
        return
    text = args.text_prefix + args.text_suffix
    for seq_len, core_only in [(L, False) for L in seq_lens] + [(L, True) for L in core_lens]:
        frames = _grid_for(seq_len, args.height, args.width, text)
        q, k, v, visual = video_qkv(
            frames, args.height, args.width, args.text_prefix, args.text_suffix, heads_q=heads_q, heads_kv=heads_kv,
            head_dim=args.head_dim, device=device, dtype=dtype, seed=args.seed,
        )
        if q.shape[2] != seq_len:
            print(f"asked for {seq_len} tokens: {frames} frames of {args.height}x{args.width} visual tokens and "
                  f"{text} text tokens make {q.shape[2]} (the seq_len column)", flush=True)
        shape = {"frames": frames, "grid": f"{frames}x{args.height}x{args.width}", "text_tokens": text,
                 "seed": args.seed}
        yield SYNTHETIC, q, k, v, (visual, None), shape, core_only


def sparsity_summary(rows: list[dict[str, Any]], budgets=(0.2, 0.3, 0.4, 0.5, 0.6)) -> list[dict[str, Any]]:
    """Per input and length, at each sparsity budget: each method's lowest error among its settings at least that
    sparse (``nan``: none reaches it), the same reading of the sweep as the frontier's, with sparsity for time."""
    out = []
    keys = sorted({(str(r.get("input") or SYNTHETIC), int(r["seq_len"])) for r in rows})
    methods = sorted({r["method"] for r in rows if r["method"] != "dense"})
    for source, length in keys:
        sub = [r for r in rows if (str(r.get("input") or SYNTHETIC), int(r["seq_len"])) == (source, length)]
        for budget in budgets:
            line: dict[str, Any] = {"input": source, "L": length, "sparsity": f">= {budget}"}
            for method in methods:
                errs = [float(r["rel_l2_error"]) for r in sub if r["method"] == method and float(r["sparsity"]) >= budget]
                line[method] = min(errs) if errs else float("nan")
            out.append(line)
    return out


def evaluate_dense_kernel(plan: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dense attention through the same Triton kernel (an all-level-1 plan), for a like-for-like error floor."""
    from vlmsparse.kernels import pyramid_attention

    return pyramid_attention(q, k, v, plan.levels, check_levels=False, **plan.kernel_kwargs())
