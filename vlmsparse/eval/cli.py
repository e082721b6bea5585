"""Command line of the harness: ``python -m vlmsparse.eval --bench videomme --method psa --data-dir ...``.

Also ``python -m vlmsparse.eval --demo`` (the main job on generated data, :mod:`vlmsparse.eval.demo`) and
``python -m vlmsparse.eval plot RUN_DIR`` (the plots of a run folder, :mod:`vlmsparse.eval.plots`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator, NoReturn, Sequence

from ..argtypes import comma_list, depths, even_frame_counts, positive_float, positive_int
from .distributed import close_process_group
from .benchmarks import Benchmark, available_benchmarks, get_benchmark
from .errors import HarnessError
from .families import sampling_help
from .model_io import DTYPES, KV_CACHES, check_model_source
from .runner import DEFAULT_DECODE_WORKERS, DEFAULT_MODEL, EvalOptions, setting_spec
from .settings import resolve_settings
from .videomme import HUB_DATASET, HUB_METADATA

EXAMPLES = """\
examples:
  python -m vlmsparse.eval --demo                      # every method on generated data, nothing downloaded
  python -m vlmsparse.eval --bench videomme --method psa --data-dir /data/Video-MME
  python -m vlmsparse.eval --method dense,psa,xattention,sparge --data-dir /data/Video-MME --split long
  python -m vlmsparse.eval --config evals/psa-videomme-065.toml --data-dir /data/Video-MME --frames 64
  accelerate launch --num_processes 8 -m vlmsparse.eval --method psa --data-dir /data/Video-MME
  python -m vlmsparse.eval --method dense,psa --data-dir /data/Video-MME --frame-cache /data/frames
  python -m vlmsparse.eval --data-dir /data/Video-MME --frame-cache /data/frames --decode-only   # no GPU needed
  python -m vlmsparse.eval plot results                # plots (PNG) of the CSVs and records in a folder
  python -m vlmsparse.eval --bench vniah --model testbed --method dense,psa --generate --seed 0 --limit 2
  python -m vlmsparse.eval --bench vniah --model testbed --generate --lengths 64,256,512 --depths 0,0.5,1
  python -m vlmsparse.eval --bench vniah --model testbed --generate --no-needle   # the control: needle left out
  python -m vlmsparse.eval --bench vniah --method psa --data-dir my_videos/ --lengths 128,512

Interrupted? Rerun the same command: answered questions are kept and skipped. Two processes may run the
same command on one --out at once: they share the work, and neither answers a question the other has.
"""


class _Parser(argparse.ArgumentParser):
    """Argument errors on one line (``prog: error: ...; see --help``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs and the tests). Which of --data-dir, --demo and --generate is
    needed depends on --bench, so :func:`parse_options` checks that."""
    p = _Parser(
        prog="python -m vlmsparse.eval",
        description="Evaluate sparse-attention methods on a video benchmark and write leaderboard CSVs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bench", default="videomme", help=f"benchmark: {', '.join(available_benchmarks())} (default videomme)")
    p.add_argument(
        "--model",
        default=None,  # DEFAULT_MODEL once parsed; None tells the demo that no model was named
        help=f"hub id or local folder of a Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE or LLaVA-OneVision / "
        f"LLaVA-Video model, or testbed (the project's trained small model; default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--method",
        type=comma_list,
        default=None,
        help="method, or a comma list run one after the other into the same table: psa, xattention, sparge, dense "
        "(default psa; dense runs the model's own attention, unpatched)",
    )
    p.add_argument(
        "--config",
        type=comma_list,
        action="extend",
        default=None,
        help="run config file(s) from evals/ (comma list or repeated); each is one setting: method, its config, "
        "frame sampling",
    )
    p.add_argument("--split", default=None, help="short, medium, long or all (default all)")
    data = p.add_mutually_exclusive_group()  # one of the two is required: checked in parse_options, after --bench
    data.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="required (or --demo): the Video-MME folder, videomme/test-*.parquet and data/<videoID>.mp4",
    )
    data.add_argument(
        "--demo",
        action="store_true",
        help="instead of --data-dir: run every method (or --method) on a generated Video-MME-shaped dataset of "
        "needle questions with the project's trained testbed model, into a fresh run folder (--out to choose it), "
        "with the plots; nothing downloaded",
    )
    p.add_argument(
        "--metadata",
        default=None,
        help=f"the question table (parquet) if it is not under --data-dir; '{HUB_METADATA}' reads {HUB_DATASET} "
        "from the hub",
    )
    frames = p.add_argument_group(
        "frame sampling (the model family's own rules; flags override the config's [run])",
        description=sampling_help(),
    )
    frames.add_argument(
        "--frames", type=positive_int, default=None,
        help="fixed frame count per video (Qwen: rounded to even; LLaVA-OneVision: default 32)",
    )
    frames.add_argument("--fps", type=positive_float, default=None, help="frames per second of video (Qwen; default 2)")
    frames.add_argument(
        "--min-pixels", type=positive_int, default=None,
        help="min pixels per frame (Qwen; default 128*28*28, Qwen3-VL 128*32*32)",
    )
    frames.add_argument(
        "--max-pixels", type=positive_int, default=None,
        help="max pixels per frame (Qwen; default 768*28*28, Qwen3-VL 768*32*32)",
    )
    frames.add_argument(
        "--total-pixels", type=positive_int, default=None,
        help="pixel budget over all frames (Qwen; default 24576*28*28, Qwen3-VL 24576*32*32)",
    )
    needle = p.add_argument_group("needle in a haystack (--bench vniah; --data-dir is then a folder of videos)")
    needle.add_argument("--generate", action="store_true", help="instead of --data-dir: generated haystacks (moving textures)")
    needle.add_argument("--no-needle", action="store_true",
                        help="the control: the same questions with the needle left out of every video; a model that "
                        "answers from the needle falls to chance (0.25), so accuracy that holds under sparsity means "
                        "the needle's blocks were kept")
    needle.add_argument("--lengths", type=even_frame_counts, default=None, help="haystack lengths in frames (default: about 1024, 2048 and 4096 visual tokens at the frame size, "
                        "within the model's context: 128,256,512 at 112 pixels, 512,1024,2048 for the testbed)")
    needle.add_argument("--depths", type=depths, default=None, help="needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)")
    needle.add_argument("--seed", type=int, default=None, help="seed of the generated questions (default 0)")
    needle.add_argument("--needle", choices=("shape", "digit", "mixed", "colour"), default=None,
                        help="needle and question: a coloured shape, a digit, either (options shuffled), or the colour "
                        "of a shape (fixed options) (default: what a testbed model was trained on, else shape)")
    needle.add_argument("--needle-frames", type=positive_int, default=None, help="frames the needle lasts (even, default 2)")
    needle.add_argument("--frame-size", type=positive_int, default=None,
                        help="side of the square frames in pixels, a multiple of 28 (default: a testbed's own, else 112)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="tokens generated per answer (default 16)")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="videomme: at most this many questions per duration split; vniah: questions per (length, depth) cell "
        "(default 4)",
    )
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="model dtype (default bfloat16)")
    p.add_argument(
        "--out", default=None, help="output folder for the CSVs, runs/ and plots (default results/; --demo: a new runs/demo-<time>/)"
    )
    p.add_argument("--skip-missing", action="store_true", help="go on without questions whose video file is missing")
    p.add_argument("--retry-errors", action="store_true", help="answer again the questions recorded with an error")
    p.add_argument("--device-map", default=None, help="transformers device_map (default: auto on GPU, cpu otherwise)")
    p.add_argument(
        "--attn-implementation", default="sdpa", help="the model's own attention, used by dense and decode (default sdpa)"
    )
    p.add_argument(
        "--vision", choices=("compiled", "segment", "unpatched"), default="compiled",
        help="the vision tower: one attention launch per layer and its blocks compiled on CUDA (compiled, default), "
        "the one launch alone (segment), or the model's own (unpatched)",
    )
    p.add_argument(
        "--kv-cache", choices=KV_CACHES, default="auto",
        help="the KV cache of generation: static (preallocated; transformers compiles the decode step on CUDA and "
        "replays it from CUDA graphs, after a one-off compilation at the first question), dynamic (transformers' "
        "default), auto (default: static on CUDA, dynamic elsewhere)",
    )
    p.add_argument(
        "--decode-workers", type=positive_int, default=DEFAULT_DECODE_WORKERS,
        help=f"videos decoded ahead in parallel on CPU threads while the GPU answers (default {DEFAULT_DECODE_WORKERS}: "
        "8, or the CPU count if smaller)",
    )
    p.add_argument(
        "--frame-cache", default=None, metavar="DIR",
        help="decode each video once: sampled frames are stored in DIR and reused by later settings and runs "
        "(at the default frame budget about 100 MB for a 1-3 minute video, 215-235 MB for one over 6.4 minutes: "
        "768 frames)",
    )
    p.add_argument(
        "--decode-only", action="store_true",
        help="fill --frame-cache ahead, without a GPU: decode every selected video by the frame sampling the "
        "settings would use, on --decode-workers threads; no model is loaded, no record written",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed first answer per setting (kernel compilation)"
    )
    return p


def parse_options(argv: Sequence[str] | None = None) -> tuple[EvalOptions, Benchmark]:
    """Parsed and checked options (settings resolved once) and the benchmark; argument errors exit through
    argparse."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    model_given = bool(args.model)
    args.model = args.model or DEFAULT_MODEL
    try:
        bench = get_benchmark(args.bench)
    except ValueError as exc:
        parser.error(str(exc))
    split = args.split or bench.default_split
    if split not in bench.splits:
        parser.error(f"unknown split {split!r} for {bench.name}; choose from {', '.join(bench.splits)}")
    try:  # unknown method, bad config file: argument errors, before anything is loaded
        settings = resolve_settings(args.method, args.config)
    except ValueError as exc:
        parser.error(str(exc))
    opts = EvalOptions(
        model=args.model,
        settings=settings,
        methods=args.method,
        configs=args.config,
        split=split,
        data_dir=args.data_dir,
        metadata=args.metadata,
        frames=args.frames,
        fps=args.fps,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        total_pixels=args.total_pixels,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        dtype=args.dtype,
        out=args.out or "results",
        skip_missing=args.skip_missing,
        retry_errors=args.retry_errors,
        device_map=args.device_map,
        attn_implementation=args.attn_implementation,
        vision=args.vision,
        kv_cache=args.kv_cache,
        decode_workers=args.decode_workers,
        frame_cache=args.frame_cache,
        decode_only=args.decode_only,
        progress=not args.no_progress,
        warmup=not args.no_warmup,
    )
    seen: dict[tuple[str, str], str] = {}
    for setting in settings:
        where = f"config {setting.source}" if setting.source else f"--method {setting.method}"
        try:
            setting_spec(setting, opts)
        except (ValueError, TypeError) as exc:
            parser.error(f"{_culprit(str(exc), args, setting) or where}: {exc}")
        key = (setting.method, setting.name)
        if key in seen:
            parser.error(f"{where} and {seen[key]} both name setting {setting.name!r} of {setting.method}; give each a name")
        seen[key] = where
    if args.decode_only and not args.frame_cache:
        parser.error("--decode-only needs --frame-cache DIR: the folder the decoded frames are stored in")
    if args.frame_cache and Path(args.frame_cache).exists() and not Path(args.frame_cache).is_dir():
        parser.error(f"--frame-cache {args.frame_cache} is a file; pass a folder for the sampled frames")
    if not (args.data_dir or args.demo or args.generate):
        parser.error(
            "--bench vniah needs --generate (generated haystacks) or --data-dir DIR (a folder of videos)"
            if bench.name == "vniah"
            else "give --data-dir DIR (a Video-MME copy) or --demo (generated data, nothing downloaded)"
        )
    needle_flags = [f"--{n.replace('_', '-')}" for n in _NEEDLE_FLAGS if getattr(args, n) not in (None, False)]
    if bench.name == "vniah":
        if args.demo:
            parser.error("--demo runs the videomme benchmark on generated data; for vniah use --generate")
        try:
            opts.vniah = _vniah_spec(args)
        except ValueError as exc:
            parser.error(str(exc))
        return opts, bench
    if needle_flags:
        parser.error(f"{', '.join(needle_flags)} apply to --bench vniah only")
    if args.demo:
        from .demo import demo_options

        if bench.name != "videomme":
            parser.error(f"--demo runs the videomme benchmark on generated data; drop --bench {bench.name}")
        if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
            parser.error(f"--out {args.out} is a file; pass a folder for the demo's run")
        if args.decode_only:
            parser.error("--decode-only decodes the videos of --data-dir; the demo generates its own")
        _check_frame_cache(parser, args)
        if model_given:  # a model of the user's: checked before any clip is written
            _model_family(parser, opts.model, check_source=True)
        return demo_options(opts, out=args.out, model_given=model_given), bench
    if not Path(opts.data_dir).is_dir():
        parser.error(
            f"--data-dir {opts.data_dir}: no such folder. Give the folder of a Video-MME copy "
            "(videomme/test-*.parquet and data/<videoID>.mp4), or try the harness on generated data first: "
            "python -m vlmsparse.eval --demo"
        )
    if opts.metadata is not None and opts.metadata != HUB_METADATA and not Path(opts.metadata).is_file():
        parser.error(f"--metadata {opts.metadata} is not a file; pass the Video-MME question table (parquet)")
    if Path(opts.out).exists() and not Path(opts.out).is_dir():
        parser.error(f"--out {opts.out} is a file; pass a folder for the CSVs and runs/")
    # decoding alone needs the model's config (its family), not its weights
    family = _model_family(parser, opts.model, check_source=not opts.decode_only)
    _check_family_frames(parser, args, opts, settings, family)
    _check_frame_cache(parser, args)
    return opts, bench


def _check_frame_cache(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--frame-cache DIR must be a folder that can be created and written: an argument error otherwise (last of
    the checks, as it creates the folder)."""
    from .frame_cache import check_cache_folder

    if args.frame_cache:
        problem = check_cache_folder(args.frame_cache)
        if problem:
            parser.error(f"--frame-cache {problem}; pass a folder you can write to")


#: Run settings a flag can set, and the flag.
_FLAGS = {
    "frames": "--frames",
    "fps": "--fps",
    "min_pixels": "--min-pixels",
    "max_pixels": "--max-pixels",
    "total_pixels": "--total-pixels",
    "max_new_tokens": "--max-new-tokens",
}


def _culprit(message: str, args: argparse.Namespace, setting) -> str:
    """The flags (or the config's ``[run]`` keys) that a settings error ``message`` speaks of."""
    import re

    named = [f for f in _FLAGS if re.search(rf"\b{f}\b", message)]
    flags = [f"{_FLAGS[f]} {getattr(args, f)}" for f in named if getattr(args, f) is not None]
    keys = [f"[run] {f} = {setting.run[f]!r}" for f in named if getattr(args, f) is None and f in setting.run]
    if keys and setting.source:
        keys = [f"config {setting.source}: " + ", ".join(keys)]
    return ", ".join(flags + keys)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run stops as it does on Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _draw_plots(out: str) -> None:
    """Redraw the plots of the output folder after a run; a plot that cannot be drawn does not fail the run."""
    from .plots import plot_run

    try:
        written = plot_run(out, speed=False)
    except (ValueError, OSError) as exc:
        print(f"plots not drawn: {exc}", file=sys.stderr)
        return
    if written:
        print("plots: " + ", ".join(str(p) for p in written), flush=True)


def _model_family(parser: argparse.ArgumentParser, model: str, *, check_source: bool):
    """The family of --model from its config.json; with ``check_source``, first that it can be a model to load
    (a folder with weights, or a hub id). Either failing is an argument error, before anything loads."""
    from .families import family_of_model

    try:
        if check_source:
            check_model_source(model)
        return family_of_model(model)
    except (HarnessError, ValueError) as exc:
        parser.error(str(exc))


def _check_family_frames(parser: argparse.ArgumentParser, args: argparse.Namespace, opts: EvalOptions, settings,
                         family) -> None:
    """Frame flags the model's family has no use for (or out of its range): argument errors, before anything
    loads."""
    for setting in settings:
        try:
            setting_spec(setting, opts, family)
        except (ValueError, TypeError) as exc:
            where = f"config {setting.source}" if setting.source else f"--method {setting.method}"
            parser.error(f"{_culprit(str(exc), args, setting) or where}: {exc}")


_NEEDLE_FLAGS = ("generate", "lengths", "depths", "seed", "needle", "needle_frames", "frame_size", "no_needle")
_VIDEOMME_ONLY = (
    "frames", "fps", "min_pixels", "max_pixels", "total_pixels", "metadata", "skip_missing", "frame_cache", "decode_only",
)


def _vniah_spec(args):
    """The needle benchmark's grid from the flags; ValueError (an argument error) for anything wrong."""
    from .model_io import resolve_model
    from .vniah import build_spec

    stray = [f"--{n.replace('_', '-')}" for n in _VIDEOMME_ONLY if getattr(args, n) not in (None, False)]
    if stray:
        raise ValueError(f"{', '.join(stray)} apply to --bench videomme; vniah sets frames with --lengths and --frame-size")
    if args.generate and args.data_dir is not None:
        raise ValueError("give one haystack source: --generate (generated videos) or --data-dir FOLDER (your videos)")
    try:
        path = resolve_model(args.model)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    try:  # a local model's context is read and checked here (a hub id's once it is read)
        spec = build_spec(path, lengths=args.lengths, depths=args.depths, samples=args.limit, seed=args.seed,
                          frame_size=args.frame_size, needle_frames=args.needle_frames, kind=args.needle,
                          data_dir=args.data_dir, control=args.no_needle, name=args.model)
    except OSError as exc:
        raise ValueError(f"cannot read the config of model {args.model!r} in {path}: {exc}") from None
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; pass a folder for the CSVs and runs/")
    try:
        check_model_source(args.model)
    except HarnessError as exc:
        raise ValueError(str(exc)) from None
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plot"]:
        from .plots import main as plot_main

        return plot_main(argv[1:])
    opts, bench = parse_options(argv)
    try:
        with _sigterm_as_interrupt():
            if opts.decode_only:
                from .runner import decode_videomme

                decode_videomme(opts)
            elif opts.demo:
                from .demo import run_demo

                run_demo(opts)
            elif bench.run(opts) and bench.name == "videomme":  # rows come back on the main process only
                _draw_plots(opts.out)
    except (HarnessError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        kept = "every video stored so far is kept" if opts.decode_only else "every answered question is saved"
        print(f"\n{what}: {kept}; rerun the same command to resume.", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        close_process_group()
    return 0
