"""``python -m vlmsparse.eval --demo``: the main job end to end on a machine with nothing downloaded.

Into a fresh run folder (``runs/demo-<time>/``, or ``--out``): a generated Video-MME-shaped dataset of needle
questions (:func:`vlmsparse.eval.synthetic_videomme.write_needle_videomme`: a shape shown for a moment in a clip
of drifting textures, asked for its colour), a model that needs no download (:func:`demo_model`), every method
(or ``--method``/``--config``) through the same harness as a real run, the leaderboard printed beside the PSA
paper's rows, the CSVs and records, the plots (:mod:`vlmsparse.eval.plots`), and the command for real data.

With the shipped testbed (trained on exactly this task) the clips are the testbed's: 56-pixel frames at 2 fps,
256 / 512 / 768 frames for short / medium / long (512 / 1024 / 1536 visual tokens, up to twelve key blocks of
128), every frame read, so its accuracy is the model's own and the sparsity what each planner reached on a model
that learned where to look. Any other model (the tiny random one when no testbed is installed, or ``--model``)
gets 32 frames of 224 x 224 pixels a clip (1024 visual tokens on Qwen2.5-VL); the tiny random model answers at
chance.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..runs import new_run_folder
from .runner import EvalOptions

if TYPE_CHECKING:
    from .needle import NeedleConfig

__all__ = ["DemoModel", "DemoData", "demo_model", "demo_data", "demo_options", "run_demo", "DEMO_METHODS", "REAL_DATA_COMMAND"]

DEMO_METHODS = ("dense", "psa", "xattention", "sparge")
#: Run after the methods' defaults when neither --method nor --config is given: PSA at a much higher sparsity
#: (its preset aimed at the paper's Video-MME sparsity), to show what the needle survives.
DEMO_SPARSE = (("psa", "videomme-0.65"),)
#: Questions (one clip each) per duration.
DEMO_QUESTIONS_PER_SPLIT = 4
#: The testbed's clips: frames per duration at 2 fps, every frame read (2 visual tokens a 56-pixel frame).
TESTBED_LENGTHS = {"short": 256, "medium": 512, "long": 768}
#: Other models' clips: 32 frames of 224 x 224 -> 16 x 8 x 8 = 1024 visual tokens per question (Qwen2.5-VL).
DEMO_FRAMES = 32
DEMO_SIDE = 224
#: Decoder layers of the tiny random model (the tests' has 2): enough for a per-layer plot.
DEMO_TINY_LAYERS = 4
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
    """The harness options of a demo: the parsed ``opts`` with the demo's methods and folder.

    Frame and generation flags the user gave are kept (the frames and pixels of the clips are set when the
    demo runs, by its model: :func:`demo_data`); ``--model`` is kept only when given (``model_given``), otherwise
    :func:`demo_model` picks one when the demo runs.
    """
    from ..methods.config import default_setting
    from .settings import resolve_settings

    cuda = torch.cuda.is_available()
    methods = opts.methods or (None if opts.configs else list(DEMO_METHODS))
    settings = resolve_settings(methods, opts.configs)
    if not opts.methods and not opts.configs:
        settings += [dataclasses.replace(default_setting(method, preset=preset), name=preset)
                     for method, preset in DEMO_SPARSE]
    return dataclasses.replace(
        opts,
        demo=True,
        model=opts.model if model_given else "",
        settings=settings,
        methods=methods,
        split="all",
        data_dir=None,
        dtype=opts.dtype if cuda else "float32",
        out=str(out) if out else str(new_run_folder("demo")),
        warmup=opts.warmup and cuda,  # the CPU path compiles nothing: no untimed first answer needed
    )


@dataclass(frozen=True)
class DemoData:
    """The clips a demo writes for its model: the needle, frames per duration, and how the harness reads them."""

    needle: "NeedleConfig"
    lengths: dict[str, int]
    frames: int | None  # a fixed frame count, or None: Qwen's fps rule (every frame of a 2 fps clip)
    pixels: int  # per frame
    model_trained_on_it: bool  # the model is a testbed trained on this needle task

    def describe(self) -> str:
        side = self.needle.frame_size
        counts = sorted(set(self.lengths.values()))
        frames = "/".join(str(n) for n in counts)
        return f"{frames} frames of {side}x{side} a clip, a {self.needle.kind} needle of {self.needle.needle_frames} frames"


def demo_data(model: DemoModel) -> DemoData:
    """The clips for ``model``: the task a testbed folder was trained on (its ``testbed.json``) at its frame size
    and the testbed's lengths, else 224-pixel clips of 32 frames with the ``colour`` question."""
    from .needle import NeedleConfig
    from .vniah import trained_needle

    trained = trained_needle(model.path)
    if trained:
        needle = NeedleConfig(**trained)
        return DemoData(needle, dict(TESTBED_LENGTHS), None, needle.frame_size ** 2, True)
    needle = NeedleConfig(frame_size=DEMO_SIDE, needle_frames=2, kind="colour")
    return DemoData(needle, {d: DEMO_FRAMES for d in TESTBED_LENGTHS}, DEMO_FRAMES, DEMO_SIDE * DEMO_SIDE, False)


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
    from .synthetic_videomme import write_needle_videomme

    start = time.perf_counter()
    folder = Path(opts.out)
    folder.mkdir(parents=True, exist_ok=True)
    if opts.model:
        from .model_io import resolve_model

        model = DemoModel(resolve_model(opts.model), f"the model you gave ({opts.model})", True)
    else:
        model = demo_model(folder / "model")
    clips = demo_data(model)
    data = write_needle_videomme(folder / "data" / "videomme", lengths=clips.lengths,
                                 questions_per_split=DEMO_QUESTIONS_PER_SPLIT, needle=clips.needle)
    opts.log(f"demo: {len(data.rows)} generated questions ({clips.describe()}) in {data.root}; model: {model.description}")
    opts = dataclasses.replace(
        opts,
        model=model.path,
        data_dir=str(data.root),
        frames=opts.frames or clips.frames,
        min_pixels=opts.min_pixels or min(clips.pixels, 4 * 28 * 28),
        max_pixels=opts.max_pixels or clips.pixels,
    )
    rows = run_videomme(opts)
    plots = plot_run(folder, speed=False)
    elapsed = time.perf_counter() - start
    files = sorted(p.name for p in folder.glob("*.csv")) + [p.name for p in plots]
    lines = [
        "",
        f"demo done in {elapsed:.0f} s. Run folder {folder}: {', '.join(files)}, and runs/*/records.jsonl "
        "(one record per question).",
    ]
    what = {"colour": "a coloured shape, asked for its colour", "shape": "a coloured shape", "digit": "a digit"}.get(
        clips.needle.kind, "a shape or a digit")
    task = (f"Each question is about a needle ({what}, shown for a moment at a depth spread over the clip) "
            "in generated drifting textures: the answer is in the clip. ")
    if not model.trained:
        task += "This model has random weights, so its accuracy is chance (about 0.25) and its replies mostly name no option. "
    elif clips.model_trained_on_it:
        task += ("The testbed was trained on this task (dense answers it), so a method's accuracy says whether its "
                 "plan kept the needle. ")
    lines.append(
        task + "The sparsity is what each method reached on this model's attention. The paper's rows are "
        "Qwen2.5-VL-7B on the real Video-MME."
    )
    lines.append(f"On real data (Qwen/Qwen2.5-VL-7B-Instruct, a GPU): {REAL_DATA_COMMAND}")
    print("\n".join(lines), flush=True)
    return rows
