"""``python -m vlmsparse.eval --demo``: the main job end to end on a machine with nothing downloaded.

Into a fresh run folder (``runs/demo-<time>/``, or ``--out``): a generated Video-MME-shaped dataset
(:mod:`vlmsparse.eval.synthetic_videomme`), a model that needs no download (:func:`demo_model`), every method
(or ``--method``/``--config``) through the same harness as a real run, the leaderboard printed beside the PSA
paper's rows, the CSVs and records, the plots (:mod:`vlmsparse.eval.plots`), and the command for real data.

The clips are 32 frames of 224 x 224 pixels: 1024 visual tokens, eight key blocks of 128, so the planners have
visual x visual blocks to skip (a prompt whose visual tokens span only a few blocks is planned dense by the
layout rules). Its accuracy means nothing: the questions' answers are assigned in turn.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runs import new_run_folder
from .runner import EvalOptions

__all__ = ["DemoModel", "demo_model", "demo_options", "run_demo", "DEMO_METHODS", "REAL_DATA_COMMAND"]

DEMO_METHODS = ("dense", "psa", "xattention", "sparge")
#: Clip shape: 32 frames of 224 x 224 -> 16 x 8 x 8 = 1024 visual tokens per question.
DEMO_FRAMES = 32
DEMO_SIDE = 224
DEMO_VIDEOS_PER_SPLIT = 2
#: Decoder layers of the tiny random model (the tests' has 2): enough for a per-layer plot.
DEMO_TINY_LAYERS = 4
DEMO_QUESTIONS_PER_VIDEO = 2
REAL_DATA_COMMAND = "python -m vlmsparse.eval --method dense,psa,xattention,sparge --data-dir /path/to/Video-MME"


@dataclass(frozen=True)
class DemoModel:
    """The model a demo runs: a local folder and what it is, in words."""

    path: str
    description: str
    trained: bool


def demo_model(folder: str | Path) -> DemoModel:
    """The demo's model: the project's trained testbed checkpoint when installed, else a tiny random one.

    The tiny random Qwen2.5-VL (:func:`vlmsparse.testing.save_tiny_qwen2_5_vl`) is saved under ``folder``.
    """
    if importlib.util.find_spec("vlmsparse.testbed") is not None:
        from vlmsparse import testbed

        path = Path(testbed.checkpoint_path()).resolve()
        if (path / "config.json").is_file():  # the folder holds a model
            return DemoModel(str(path), "the project's testbed model (trained on generated video tasks)", True)
    from vlmsparse.testing import save_tiny_qwen2_5_vl

    path = save_tiny_qwen2_5_vl(Path(folder).resolve() / "tiny-qwen2.5-vl", num_hidden_layers=DEMO_TINY_LAYERS)
    return DemoModel(str(path), f"a tiny randomly initialised Qwen2.5-VL ({DEMO_TINY_LAYERS} layers), saved in {path}", False)


def demo_options(opts: EvalOptions, *, out: str | None, model_given: bool) -> EvalOptions:
    """The harness options of a demo: the parsed ``opts`` with the demo's data, methods, frames and folder.

    Frame and generation flags the user gave are kept; ``--model`` is kept only when given (``model_given``),
    otherwise :func:`demo_model` picks one when the demo runs.
    """
    from .settings import resolve_settings

    cuda = torch.cuda.is_available()
    methods = opts.methods or (None if opts.configs else list(DEMO_METHODS))
    return dataclasses.replace(
        opts,
        demo=True,
        model=opts.model if model_given else "",
        settings=resolve_settings(methods, opts.configs),
        methods=methods,
        split="all",
        data_dir=None,
        frames=opts.frames or DEMO_FRAMES,
        min_pixels=opts.min_pixels or 4 * 28 * 28,
        max_pixels=opts.max_pixels or DEMO_SIDE * DEMO_SIDE,
        dtype=opts.dtype if cuda else "float32",
        out=str(out) if out else str(new_run_folder("demo")),
        warmup=opts.warmup and cuda,  # the CPU path compiles nothing: no untimed first answer needed
    )


def run_demo(opts: EvalOptions) -> list[dict]:
    """Run the demo of ``opts`` (from :func:`demo_options`); returns the leaderboard rows written."""
    threads = torch.get_num_threads()
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # The demo's tensors are small: one thread runs them as fast as several, and on a busy machine much
        # faster (threads waiting for each other at every small op).
        torch.set_num_threads(1)
    try:
        return _run_demo(opts)
    finally:
        torch.set_num_threads(threads)


def _run_demo(opts: EvalOptions) -> list[dict]:
    from .plots import plot_run
    from .runner import run_videomme
    from .synthetic_videomme import write_synthetic_videomme

    start = time.perf_counter()
    folder = Path(opts.out)
    folder.mkdir(parents=True, exist_ok=True)
    data = write_synthetic_videomme(
        folder / "data" / "videomme",
        videos_per_split=DEMO_VIDEOS_PER_SPLIT,
        questions_per_video=DEMO_QUESTIONS_PER_VIDEO,
        num_frames=DEMO_FRAMES,
        height=DEMO_SIDE,
        width=DEMO_SIDE,
    )
    if opts.model:
        model = DemoModel(opts.model, f"the model you gave ({opts.model})", True)
    else:
        model = demo_model(folder / "model")
    opts.log(
        f"demo: {len(data.rows)} generated questions ({DEMO_FRAMES} frames of {DEMO_SIDE}x{DEMO_SIDE} each) in "
        f"{data.root}; model: {model.description}"
    )
    rows = run_videomme(dataclasses.replace(opts, model=model.path, data_dir=str(data.root)))
    plots = plot_run(folder, speed=False)
    elapsed = time.perf_counter() - start
    files = sorted(p.name for p in folder.glob("*.csv")) + [p.name for p in plots]
    lines = [
        "",
        f"demo done in {elapsed:.0f} s. Run folder {folder}: {', '.join(files)}, and runs/*/records.jsonl "
        "(one record per question).",
    ]
    lines.append(
        "The generated questions' answers are assigned in turn, not read from the clips, so accuracy here is "
        "chance for any model (about 0.25)"
        + ("; this model has random weights and its replies mostly name no option" if not model.trained else "")
        + ". The sparsity is what each method reached on this model's attention. The paper's rows are "
        "Qwen2.5-VL-7B on the real Video-MME."
    )
    lines.append(f"On real data (Qwen/Qwen2.5-VL-7B-Instruct, a GPU): {REAL_DATA_COMMAND}")
    print("\n".join(lines), flush=True)
    return rows
