"""Command line: ``python -m vlmsparse.calibrate --method psa --target-sparsity 0.65 --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from vlmsparse.argtypes import device as device_arg, numbers, require_available

EXAMPLES = """\
examples:
  python -m vlmsparse.calibrate --bench synthetic --method psa --samples 6 --holdout 3 --target-sparsity 0.4 --out runs/cal
  python -m vlmsparse.calibrate --model testbed --bench vniah --bench-option lengths=1024,2048 \\
      --bench-option samples=2 --method xattention --samples 8 --holdout 4 --target-sparsity 0.6 --out runs/cal-xattn
  python -m vlmsparse.calibrate --bench videomme --data-dir /data/Video-MME --method psa --samples 16 \\
      --target-error 0.05 --per-head --out runs/cal-psa
then: python -m vlmsparse.eval --config runs/cal/calibrated.toml ...   (or vlmsparse.patch(model, config_file=...))
"""


def _shape(text: str) -> tuple[int, int, int]:
    try:
        f, h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FRAMESxHEIGHTxWIDTH, e.g. 4x8x8, got {text!r}") from None
    if min(f, h, w) < 1:
        raise argparse.ArgumentTypeError(f"every size of {text!r} must be >= 1")
    return f, h, w


def _heads(text: str) -> tuple[int, int]:
    try:
        q, kv = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected QUERY:KV heads, e.g. 28:4, got {text!r}") from None
    if q < 1 or kv < 1 or q % kv:
        raise argparse.ArgumentTypeError(f"query heads must be a positive multiple of key/value heads, got {text!r}")
    return q, kv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vlmsparse.calibrate",
        description="Per-layer settings of a sparse-attention method from a profile of dense attention.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", default=None, help="psa, xattention or sparge (default psa, or the --config's)")
    p.add_argument("--config", default=None, help="base setting (a run config TOML): the knob scales it")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-sparsity", type=float, default=None, help="overall sparsity to reach, in (0, 1)")
    target.add_argument("--target-error", type=float, default=None,
                        help="RMS over layers of the relative L2 attention error to stay within, in (0, 1)")
    p.add_argument("--samples", type=int, default=8, help="calibration samples (default 8)")
    p.add_argument("--holdout", type=int, default=0, help="further samples to measure the result on (default 0)")
    p.add_argument("--per-head", action="store_true", help="one knob per plan head instead of per layer")
    p.add_argument("--grid", type=numbers, default=None, help="knob values to profile, comma-separated")
    p.add_argument("--compare", action="append", default=[], help="run config also measured on the held-out samples")
    p.add_argument("--out", default=None,
                   help="output folder (default results/runs/calibration/<bench>-<method>-<target>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--bench", default="synthetic", help="synthetic, or a benchmark of vlmsparse.eval (videomme, ...)")
    model = p.add_argument_group("model and benchmark samples (--bench other than synthetic)")
    model.add_argument("--model", default=None, help="hub id, local folder, or testbed (default Qwen2.5-VL-7B-Instruct)")
    model.add_argument("--split", default=None, help="benchmark split (default: the benchmark's)")
    model.add_argument("--data-dir", default=None, help="benchmark data folder")
    model.add_argument("--metadata", default=None, help="question table, if not under --data-dir")
    model.add_argument("--frames", type=int, default=None)
    model.add_argument("--fps", type=float, default=None)
    model.add_argument("--min-pixels", type=int, default=None)
    model.add_argument("--max-pixels", type=int, default=None)
    model.add_argument("--total-pixels", type=int, default=None)
    model.add_argument("--dtype", default=None, help="model / synthetic dtype (default bfloat16 on GPU, float32 on CPU)")
    model.add_argument("--device-map", default=None, help="transformers device_map (default auto on GPU)")
    model.add_argument("--attn-implementation", default="sdpa")
    model.add_argument("--bench-option", action="append", default=[], metavar="KEY=VALUE",
                       help="another option of the benchmark: a field of vlmsparse.eval's options (e.g. limit=2), or "
                            "the benchmark's own (vniah: lengths=1024,2048 depths=0,0.5,1 samples=2 seed=3 "
                            "generate=true needle= needle_frames= frame_size=)")
    syn = p.add_argument_group("synthetic source (--bench synthetic)")
    syn.add_argument("--layers", type=int, default=8, help="synthetic layers (default 8)")
    syn.add_argument("--tokens", type=_shape, default=(4, 16, 16),
                     help="visual grid FRAMESxHEIGHTxWIDTH (default 4x16x16: 1024 visual tokens, eight key blocks of "
                          "128, so the methods' default blocks have something to skip)")
    syn.add_argument("--heads", type=_heads, default=(4, 1), help="QUERY:KV heads (default 4:1)")
    syn.add_argument("--head-dim", type=int, default=64)
    syn.add_argument("--device", default="cpu", type=device_arg, help="cpu or cuda")
    syn.add_argument("--seed", type=int, default=0, help="synthetic model seed")
    return p


def _base_setting(args) -> tuple[str, dict, dict, str]:
    """``(method, [method_config], [run], name)`` of the base setting."""
    from vlmsparse.methods import load_run_config

    if args.config is None:
        return args.method or "psa", {}, {}, ""
    run = load_run_config(args.config)
    if args.method is not None and args.method != run.method:
        raise ValueError(f"--config {args.config} is for method {run.method!r}, not --method {args.method}")
    if run.layer_overrides:
        raise ValueError(f"--config {args.config} already has per-layer settings; calibrate from a single setting")
    return run.method, dict(run.method_config), dict(run.run), run.name


def _synthetic_source(args):
    import torch

    from .synthetic import SyntheticLayers

    require_available(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"--dtype must be float32, bfloat16 or float16, got {args.dtype!r}")
    f, h, w = args.tokens
    return SyntheticLayers(args.layers, f, h, w, heads_q=args.heads[0], heads_kv=args.heads[1], head_dim=args.head_dim,
                           device=args.device, dtype=dtype, seed=args.seed)


def _option_value(text: str):
    """``true``/``false``, an int, a float, a comma list of those, else the text."""
    if "," in text:
        return [_option_value(t) for t in text.split(",")]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _model_source(args, run: dict, needed: int):
    import torch

    from vlmsparse.eval.benchmarks import get_benchmark
    from vlmsparse.eval.runner import DEFAULT_MODEL, EvalOptions

    from vlmsparse.eval.errors import HarnessError
    from vlmsparse.eval.families import family_of_model
    from vlmsparse.eval.model_io import check_model_source, resolve_model

    from .model_source import ModelLayers

    name = args.model or DEFAULT_MODEL
    try:  # the model can be loaded and is of a supported family: checked before any sample is made
        check_model_source(name)
        family_of_model(name)
    except HarnessError as exc:
        raise ValueError(str(exc)) from None
    bench = get_benchmark(args.bench)
    if bench.samples is None:
        raise ValueError(f"benchmark {args.bench!r} gives no calibration samples (its registry entry has no samples=)")
    split = args.split or bench.default_split
    if split not in bench.splits:
        raise ValueError(f"unknown split {split!r} for {bench.name}; choose from {', '.join(bench.splits)}")
    frames = {k: getattr(args, k) if getattr(args, k) is not None else run.get(k)
              for k in ("frames", "fps", "min_pixels", "max_pixels", "total_pixels")}
    if args.fps is not None and args.frames is None:
        frames["frames"] = None
    model_id = resolve_model(name)
    opts = EvalOptions(model=model_id, split=split, data_dir=args.data_dir, metadata=args.metadata, **frames,
                       dtype=args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32"),
                       progress=False)
    own: dict = {}  # the benchmark's own options (vniah: lengths, depths, seed, ...)
    for item in args.bench_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--bench-option {item!r}: expected KEY=VALUE")
        if hasattr(opts, key) and key != "vniah":
            setattr(opts, key, _option_value(value))
        elif bench.configure is not None:
            own[key] = _option_value(value)
        else:
            raise ValueError(f"--bench-option {item!r}: {key} is no option of vlmsparse.eval nor of {bench.name}")
    if bench.configure is not None:
        bench.configure(opts, own)
    samples = bench.samples(opts)
    if len(samples) < needed:
        raise ValueError(
            f"benchmark {bench.name} gives {len(samples)} samples here, fewer than --samples + --holdout = {needed}"
        )
    from vlmsparse.eval.model_io import load_model

    device_map = args.device_map or ("auto" if torch.cuda.is_available() else None)
    model, processor = load_model(model_id, dtype=opts.dtype, device_map=device_map,
                                  attn_implementation=args.attn_implementation)
    return ModelLayers(model, processor, samples[:needed], name=name)


_MODEL_OPTIONS = ("model", "split", "data_dir", "metadata", "frames", "fps", "min_pixels", "max_pixels",
                  "total_pixels", "device_map", "attn_implementation", "bench_option")
_SYNTHETIC_OPTIONS = ("layers", "tokens", "heads", "head_dim", "device", "seed")


def _stray_options(parser: argparse.ArgumentParser, args) -> str | None:
    """The one-line complaint when options of one sample source are given with the other (they would be ignored:
    ``--model`` with the default ``--bench synthetic`` calibrated on generated layers, not on that model)."""
    synthetic = args.bench == "synthetic"
    names = _MODEL_OPTIONS if synthetic else _SYNTHETIC_OPTIONS
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) != parser.get_default(n)]
    if not given:
        return None
    if synthetic:
        return (f"{', '.join(given)} apply to a model's samples; add --bench videomme or --bench vniah "
                "(the default, --bench synthetic, profiles generated layers and loads no model)")
    return f"{', '.join(given)} apply to --bench synthetic only; --bench {args.bench} profiles the model's own layers"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .run import CalibrationSpec, calibrate, check_spec

    try:
        if args.method is not None:
            from .knobs import knob_for

            knob_for(args.method)  # a method without a knob (dense) fails before anything else
        if args.bench != "synthetic":
            from vlmsparse.eval.benchmarks import get_benchmark

            get_benchmark(args.bench)  # an unknown name is the error to report, not the options that go with it
        stray = _stray_options(parser, args)
        if stray:
            raise ValueError(stray)
        method, fields, run, name = _base_setting(args)
        spec = CalibrationSpec(
            method=method, samples=args.samples, target_sparsity=args.target_sparsity,
            target_error=args.target_error, per_head=args.per_head, holdout=args.holdout, grid=args.grid,
            base_fields=fields, base_run=run, base_name=name, compare=list(args.compare),
            info={"bench": args.bench, "model": args.model if args.bench != "synthetic" else None,
                  "base_config": args.config},
        )
        check_spec(spec)
        if args.out is None:
            target = f"s{spec.target_sparsity}" if spec.target_sparsity is not None else f"e{spec.target_error}"
            args.out = f"results/runs/calibration/{args.bench}-{method}-{target}{'-per-head' if spec.per_head else ''}"
        for path in spec.compare:
            if not Path(path).is_file():
                raise ValueError(f"--compare {path}: no such run config file")
        if args.bench == "synthetic":
            source = _synthetic_source(args)
        else:
            source = _model_source(args, run, spec.samples + spec.holdout)
        from .report import summary_table, write_reports

        result = calibrate(spec, source, Path(args.out), progress=not args.no_progress)
        summary = write_reports(result, Path(args.out))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(summary))
    print(f"wrote {args.out}/calibrated.toml (use: vlmsparse.patch(model, config_file=...) or "
          f"python -m vlmsparse.eval --config ...), global.toml, profile.csv, choice.csv, "
          f"{'heldout.csv, ' if spec.holdout else ''}summary.json, calibration.png")
    return 0
