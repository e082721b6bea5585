"""``python -m vlmsparse.testbed train|check``: train the testbed, or measure a testbed folder's dense accuracy."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Sequence

from ..argtypes import depths, device as device_arg, even_frame_counts, positive_int, positive_ints, require_available

EXAMPLES = """\
examples:
  python -m vlmsparse.testbed train --device cuda --out runs/testbed        # the shipped recipe (H200: minutes)
  python -m vlmsparse.testbed train --preset cpu --out runs/testbed-cpu     # the shipped checkpoint's recipe, CPU
  python -m vlmsparse.testbed train --preset cpu-long --init runs/testbed-cpu --out runs/testbed-cpu2
  python -m vlmsparse.testbed train --stages 16:200,64:200 --lengths 8,16,32,64 --out runs/tb
  python -m vlmsparse.testbed check --model runs/testbed --lengths 64,512   # dense accuracy on fresh seeds
  python -m vlmsparse.testbed check --lengths 512,2048 --no-needle         # the control: needle left out, chance
"""


def _stages(text: str):
    from .train import Stage

    stages = []
    for part in text.split(","):
        try:
            frames, steps = part.split(":")
            stages.append(Stage(int(frames), int(steps)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"a stage is MAX_FRAMES:STEPS (e.g. 16:300,64:300), got {part!r}"
            ) from None
    return tuple(stages)


def build_parser() -> argparse.ArgumentParser:
    from .train import PRESETS

    p = argparse.ArgumentParser(
        prog="python -m vlmsparse.testbed",
        description="Train the vlmsparse testbed (a small Qwen2.5-VL) on generated video needle questions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a testbed from scratch (or from --init) and save it as a model folder")
    t.add_argument("--out", default="runs/testbed", help="output model folder (default runs/testbed)")
    t.add_argument("--device", default="cpu", type=device_arg, help="cpu or cuda (default cpu)")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="recipe: gpu (up to 512 frames; default with --device cuda), cpu (the shipped checkpoint's, short "
                   "haystacks; default otherwise) or cpu-long (continues a cpu checkpoint given by --init)")
    t.add_argument("--init", default=None, help="continue from this testbed folder instead of a fresh model")
    t.add_argument("--stages", type=_stages, default=None, help="curriculum MAX_FRAMES:STEPS,... (default: the preset's)")
    t.add_argument("--lengths", type=positive_ints, default=None, help="haystack lengths in frames the curriculum draws from")
    t.add_argument("--tokens-per-step", type=int, default=None, help="visual tokens per step (sets the batch size)")
    t.add_argument("--max-batch", type=int, default=None, help="largest batch")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate")
    t.add_argument("--kind", choices=("shape", "digit", "mixed", "colour"), default=None,
                   help="needle questions trained on (default colour: fixed options; the shuffled-option kinds did not "
                   "learn within a few minutes of H200 time)")
    t.add_argument("--seed", type=int, default=None, help="seed of the weights and of the training draws")
    t.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    t.add_argument("--eval-lengths", type=even_frame_counts, default=None, help="lengths of the accuracy check at the end")
    t.add_argument("--eval-samples", type=int, default=None, help="samples per (length, depth) cell of the check")
    c = sub.add_parser("check", help="dense accuracy of a testbed folder on fresh seeds, per length and depth")
    c.add_argument("--model", default="testbed", help="testbed folder (default: the shipped checkpoint)")
    c.add_argument("--device", default="cpu", type=device_arg, help="cpu or cuda")
    c.add_argument("--lengths", type=even_frame_counts, default=(16, 32), help="haystack lengths in frames (default 16,32)")
    c.add_argument("--depths", type=depths, default=(0.0, 0.25, 0.5, 0.75, 1.0), help="needle depths in [0, 1]")
    c.add_argument("--samples", type=positive_int, default=8, help="samples per cell (default 8)")
    c.add_argument("--no-needle", action="store_true",
                   help="the control: the same questions with the needle left out of the video (a model that reads "
                   "the needle answers at chance, 0.25)")
    f = sub.add_parser("fidelity", help="per-layer attention error of each method on the model's own q/k/v")
    f.add_argument("--model", default="testbed", help="testbed folder (default: the shipped checkpoint)")
    f.add_argument("--device", default="cpu", type=device_arg, help="cpu or cuda")
    f.add_argument("--lengths", type=even_frame_counts, default=(32,), help="haystack lengths in frames (default 32)")
    f.add_argument("--samples", type=positive_int, default=1, help="needle samples per length (default 1)")
    f.add_argument("--seed", type=int, default=0, help="seed of the samples")
    f.add_argument("--methods", default=None, help="only these methods of the sweep (comma list)")
    f.add_argument("--out", default="runs/testbed_fidelity.csv", help="CSV to write (rows of a rerun are replaced)")
    return p


def _train_config(args):
    from .train import PRESETS

    preset = args.preset or ("gpu" if args.device.startswith("cuda") else "cpu")
    cfg = PRESETS[preset]
    overrides = {
        "stages": args.stages,
        "lengths": args.lengths,
        "tokens_per_step": args.tokens_per_step,
        "max_batch": args.max_batch,
        "lr": args.lr,
        "kind": args.kind,
        "seed": args.seed,
        "time_limit_s": args.time_limit,
        "eval_lengths": args.eval_lengths,
        "eval_samples": args.eval_samples,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.stages is not None and args.lengths is None:
        top = max(s.max_frames for s in args.stages)
        overrides["lengths"] = tuple(L for L in (8, 16, 32, 64, 128, 256, 512, 1024) if L <= top) or (top,)
    return dataclasses.replace(cfg, **overrides)


def _model_folder(model: str, what: str = "--model"):
    """The testbed folder ``model`` names (``testbed``: the shipped checkpoint), checked before anything loads;
    ``ValueError`` (one line) when it is no model folder or not a testbed (a Qwen2.5-VL)."""
    from pathlib import Path

    from ..eval.errors import HarnessError
    from ..eval.families import family_of_model
    from ..eval.model_io import check_model_source, resolve_model

    try:
        check_model_source(model)
        path = Path(resolve_model(model))
    except (HarnessError, FileNotFoundError) as exc:
        raise ValueError(str(exc).replace("--model", what)) from None
    if not path.is_dir():
        raise ValueError(f"{what} {model}: no such folder; give a testbed folder (the --out of train) or testbed")
    family = family_of_model(str(path))
    if family.name != "qwen2_5_vl":
        raise ValueError(f"{what} {model} is a {family.name} model; the testbed commands take a testbed folder "
                         "(a small Qwen2.5-VL, the --out of train)")
    return path


def _check(args) -> int:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ..model.processor import load_processor
    from .train import TrainConfig, evaluate

    path = _model_folder(args.model)
    require_available(args.device)
    device = torch.device(args.device)
    from ..eval.vniah import trained_needle
    from .model import TestbedSpec

    trained = trained_needle(str(path))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).to(device).eval()
    processor = load_processor(path)
    spec = TestbedSpec(frame_size=trained.get("frame_size", 112))
    cfg = TrainConfig(kind=trained.get("kind", "shape"), needle_frames=trained.get("needle_frames", 2),
                      eval_depths=tuple(args.depths), spec=spec)
    result = evaluate(model, processor, cfg, device=device, lengths=args.lengths, samples=args.samples,
                      with_needle=not args.no_needle)
    shown = {k: result[k] for k in ("overall", "by_length", "by_depth", "samples")}
    if args.no_needle:
        shown = {"control": "needle left out (chance 0.25)", **shown}
    print(json.dumps(shown, indent=2))
    return 0


def _fidelity(args) -> int:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ..eval import leaderboard as lb
    from ..eval.model_io import VideoQA
    from ..eval.needle import NeedleConfig, make_sample
    from ..eval.prompts import build_prompt
    from ..eval.runner import device_name
    from ..eval.vniah import sampled_video
    from ..model.processor import load_processor
    from .fidelity import COLUMNS, capture_qkv, layer_errors, mean_rows
    from .sweep import SWEEP

    path = _model_folder(args.model)
    require_available(args.device)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    methods = args.methods.split(",") if args.methods else None
    unknown = sorted(set(methods or ()) - {s[1] for s in SWEEP})
    if unknown:
        raise ValueError(f"--methods {','.join(unknown)}: not in the sweep; choose from {sorted({s[1] for s in SWEEP})}")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval()
    qa = VideoQA(model, load_processor(path), max_new_tokens=1)
    from ..eval.vniah import trained_needle

    needle = NeedleConfig(**trained_needle(str(path)))
    sweep = [s for s in SWEEP if methods is None or s[1] in methods]
    backend = "triton" if cuda else "float32"
    rows = []
    for length in args.lengths:
        for index in range(args.samples):
            sample = make_sample(args.seed, length, 0.5, needle, index=index)
            prompt = build_prompt(sample.question.question, sample.question.options)
            inputs = qa.inputs(sampled_video(sample.frames), prompt)
            layers = capture_qkv(model, dict(inputs))
            meta = {"model": args.model, "frames": length, "visual_tokens": int(layers[0].visual.sum()), "sample": index,
                    "device": device_name(device), "seed": args.seed}
            got = layer_errors(layers, sweep, backend=backend, meta=meta)
            rows += got + mean_rows(got)
            for row in mean_rows(got):
                print(f"{length:5d} frames  {row['method']:10s} {row['setting']:16s} sparsity {row['sparsity']:.3f}  "
                      f"error {row['rel_l2_error']:.4f}  recall {row['recall']:.4f}  (mean of {len(layers)} layers)")
    key = ("model", "method", "setting", "layer", "frames", "sample", "device", "seed")
    lb.upsert_rows(args.out, rows, columns=COLUMNS, key=key)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from .train import train

            cfg = _train_config(args)
            require_available(args.device)
            init = _model_folder(args.init, "--init") if args.init is not None else None
            train(cfg, args.out, device=args.device, init=init)
            return 0
        if args.command == "fidelity":
            return _fidelity(args)
        return _check(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
