"""Capture a model's own attention inputs (each chosen decoder layer's q, k, v and token layout in one dense
prefill of a video question) into a file that ``bench fidelity --inputs`` and ``bench pareto --inputs`` take in
place of their generated inputs.

The video is either a file, sampled by the model family's own rules as the harness samples it (``--video``), or
a generated needle haystack (``--generate FRAMES``: the needle a testbed was trained on, or the default
needle). The file holds the layers' tensors as the planners receive them (post-rotary, batch of one) and where
they came from (model, video, frames, question); see :mod:`vlmsparse.model.capture` for the format.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

EXAMPLES = """\
examples:
  python -m vlmsparse.bench capture --model testbed --generate 1024 --out runs/qkv-testbed-1024.pt
  python -m vlmsparse.bench capture --model Qwen/Qwen2.5-VL-7B-Instruct --video clip.mp4 --device cuda --out runs/qkv-7b.pt
then give the file to the sweeps: bench fidelity --inputs FILE (CPU or GPU), bench pareto --inputs FILE (GPU)
"""

#: Writes the capture file it is given, not a CSV of rows (no --results).
WRITES_CSV = False

#: Models with more decoder layers than this have four spread layers captured unless --layers says otherwise.
ALL_LAYERS_UP_TO = 8
DEFAULT_QUESTION = "Describe what happens in the video."
SAVE_DTYPES = ("same", "bfloat16", "float16", "float32")


def _layers(text: str) -> list[int] | str:
    if text.strip() == "all":
        return "all"
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected all or comma-separated layer numbers, got {text!r}") from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"expected all or layer numbers >= 0, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vlmsparse.argtypes import device as device_arg, positive_float, positive_int

    p.add_argument("--model", default="testbed",
                   help="hub id, local folder, or testbed (the project's trained model; the default)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", default=None, metavar="FILE", help="a video file, sampled by the model family's rules")
    src.add_argument("--generate", type=positive_int, default=None, metavar="FRAMES",
                     help="a generated needle haystack of FRAMES frames (even) at 2 fps")
    p.add_argument("--frames", type=positive_int, default=None, help="with --video: a fixed frame count")
    p.add_argument("--fps", type=positive_float, default=None, help="with --video: frames per second of video")
    p.add_argument("--max-pixels", type=positive_int, default=None, help="with --video: pixels per frame at most")
    p.add_argument("--question", default=None,
                   help=f"with --video: the question's text (default {DEFAULT_QUESTION!r}); a generated haystack "
                   "asks its needle question")
    p.add_argument("--depth", type=float, default=0.5, help="with --generate: the needle's depth in [0, 1] (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="with --generate: the haystack's seed (default 0)")
    p.add_argument("--layers", type=_layers, default=None,
                   help=f"decoder layers to keep: all, or a comma list (default: all up to {ALL_LAYERS_UP_TO} layers, "
                   "else four spread over the depth: first, a third, two thirds, last)")
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="the model's dtype (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--save-dtype", default="same", choices=SAVE_DTYPES,
                   help="dtype of the saved tensors (default: the model's)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the capture file to write (default runs/capture-<date>-<time>.pt)")


def check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the first bad flag (before any model loads)."""
    from vlmsparse.argtypes import require_available
    from vlmsparse.eval.errors import HarnessError
    from vlmsparse.eval.model_io import check_model_source

    require_available(args.device)
    if args.generate is not None:
        if args.generate < 2 or args.generate % 2:
            raise ValueError(f"--generate: a haystack is an even frame count >= 2 (frames go in pairs), got {args.generate}")
        stray = [f for f, v in (("--frames", args.frames), ("--fps", args.fps), ("--max-pixels", args.max_pixels),
                                ("--question", args.question)) if v is not None]
        if stray:
            raise ValueError(f"{', '.join(stray)} apply to --video; a generated haystack sets its own frames and question")
        if not 0.0 <= args.depth <= 1.0:
            raise ValueError(f"--depth must be within [0, 1], got {args.depth}")
    elif not Path(args.video).is_file():
        raise ValueError(f"--video {args.video}: no such file")
    if args.out is not None and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give the capture file's path (e.g. runs/qkv.pt)")
    try:
        check_model_source(args.model)
    except HarnessError as exc:
        raise ValueError(str(exc)) from None


def default_layers(num_layers: int) -> list[int]:
    """Every layer of a small model; first, a third, two thirds and last of a deeper one."""
    if num_layers <= ALL_LAYERS_UP_TO:
        return list(range(num_layers))
    return sorted({0, num_layers // 3, (2 * num_layers) // 3, num_layers - 1})


def _video_and_prompt(args, model_path: str, family):
    """``(sampled video, prompt, description of both)`` from --video or --generate."""
    from vlmsparse.eval.prompts import build_prompt

    if args.generate is not None:
        from vlmsparse.eval.needle import NeedleConfig, make_sample
        from vlmsparse.eval.vniah import sampled_video, trained_needle

        needle = NeedleConfig(**trained_needle(model_path))
        sample = make_sample(args.seed, args.generate, args.depth, needle, index=0)
        prompt = build_prompt(sample.question.question, sample.question.options)
        source = dict(video=f"generated needle haystack ({needle.kind})", frames=args.generate, depth=args.depth,
                      seed=args.seed, question=sample.question.question)
        return sampled_video(sample.frames), prompt, source
    from vlmsparse.eval.frames import DEFAULT_MIN_PIXELS, FrameSpec, read_video

    fields = dict(family.frame_defaults)
    for name in ("frames", "fps", "max_pixels"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.fps is not None and args.frames is None and fields.get("sampling", "fps") == "fps":
        fields["frames"] = None
    if args.max_pixels is not None:  # a cap below the family's least pixels lowers that too
        fields["min_pixels"] = min(fields.get("min_pixels", DEFAULT_MIN_PIXELS), args.max_pixels)
    try:
        spec = FrameSpec(**fields)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    video = read_video(args.video, spec)
    question = args.question or DEFAULT_QUESTION
    source = dict(video=str(args.video), frames=video.num_frames, question=question)
    return video, question, source


def run(args: argparse.Namespace) -> int:
    import torch

    from vlmsparse.eval.families import family_of_model
    from vlmsparse.eval.model_io import VideoQA, load_model, resolve_model
    from vlmsparse.eval.runner import device_name
    from vlmsparse.model.capture import capture_qkv, save_capture
    from vlmsparse.model.families import family_for_model

    try:
        family = family_of_model(args.model)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    path = resolve_model(args.model)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    video, prompt, source = _video_and_prompt(args, path, family)
    model, processor = load_model(path, dtype=dtype, device_map={"": str(device)} if cuda else None, family=family)
    model.to(device)
    num_layers = len(list(family_for_model(model).attention_modules(model)))
    layers = default_layers(num_layers) if args.layers is None else (
        list(range(num_layers)) if args.layers == "all" else args.layers)
    missing = [i for i in layers if i >= num_layers]
    if missing:
        raise SystemExit(f"error: --layers {','.join(map(str, missing))}: the model has {num_layers} decoder layers "
                         f"(0-{num_layers - 1})")
    qa = VideoQA(model, processor, max_new_tokens=1, processor_kwargs=family.processor_kwargs)
    inputs = qa.inputs(video, prompt)
    captured = capture_qkv(model, dict(inputs), layers)
    if len(captured) != len(layers):
        raise SystemExit(f"error: the prefill reached {len(captured)} of the {len(layers)} layers asked for")
    visual = int(captured[0].visual.sum())
    if visual == 0:
        raise SystemExit("error: the prompt holds no visual tokens; nothing for the planners to make sparse")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/capture-{stamp}.pt")
    save_dtype = None if args.save_dtype == "same" else getattr(torch, args.save_dtype)
    meta = dict(model=args.model, family=family.name, **source, seq_len=int(captured[0].q.shape[2]),
                visual_tokens=visual, layers=",".join(str(x.layer) for x in captured), num_layers=num_layers,
                model_dtype=dtype, device=device_name(device),
                date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"))
    save_capture(out, captured, meta, save_dtype)
    first = captured[0]
    print(f"captured layers {meta['layers']} of {num_layers}: {meta['seq_len']} tokens ({visual} visual), q "
          f"{tuple(first.q.shape)}, k/v {tuple(first.k.shape)}; wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    print(f"next: python -m vlmsparse.bench fidelity --inputs {out}   (or bench pareto --inputs {out} on a GPU)")
    return 0
