"""Benchmarks: ``python -m vlmsparse.bench <subcommand>``.

- ``fidelity`` (:mod:`vlmsparse.bench.fidelity`): sweep each planner's knob on synthetic video-like q/k/v and
  write sparsity, output error against dense attention and attention recall to ``fidelity.csv``.
- ``kernel`` (:mod:`vlmsparse.bench.kernel`) and ``prefill`` (:mod:`vlmsparse.bench.prefill`): speed benchmarks;
  ``prefill-qwen3-vl`` (:mod:`vlmsparse.bench.prefill_qwen3_vl`) the prefill of a Qwen3-VL-8B-shaped model with
  its timestamps, DeepStack and M-RoPE.
- ``question`` (:mod:`vlmsparse.bench.question`): where a whole question's time goes (vision tower, decoder prefill,
  generation) on a 7B-shaped model, per method; ``decode`` (:mod:`vlmsparse.bench.decode`): the CPU side's decord rate.
- ``capture`` (:mod:`vlmsparse.bench.capture`): a model's own q/k/v from one prefill of a video question, saved for
  ``fidelity --inputs`` and ``pareto --inputs`` (learned attention in place of the generated families).

Each writes into a new run folder (``runs/<name>-<date>-<time>/``, or ``--out DIR``) and adds its rows to
``results/<name>.csv`` only with ``--results`` (:func:`vlmsparse.bench.common.add_output_arguments`).

To add a subcommand, write a module with ``add_arguments(parser: argparse.ArgumentParser)`` and
``run(args) -> int | None`` (and, if it likes, an ``EXAMPLES`` string for its help) and add its name here (or
call :func:`register_subcommand`).
:mod:`vlmsparse.bench.synthetic` provides the inputs (``video_qkv``) for any of them.
"""

from __future__ import annotations

#: subcommand name -> module path (imported only when the subcommand runs)
SUBCOMMANDS: dict[str, str] = {
    "fidelity": "vlmsparse.bench.fidelity",
    "kernel": "vlmsparse.bench.kernel",
    "prefill": "vlmsparse.bench.prefill",
    "pareto": "vlmsparse.bench.pareto",
    "question": "vlmsparse.bench.question",
    "decode": "vlmsparse.bench.decode",
    "prefill-qwen3-vl": "vlmsparse.bench.prefill_qwen3_vl",
    "capture": "vlmsparse.bench.capture",
}


def register_subcommand(name: str, module: str) -> None:
    """Make ``python -m vlmsparse.bench <name>`` run ``module`` (which defines ``add_arguments`` and ``run``)."""
    SUBCOMMANDS[name] = module


__all__ = ["SUBCOMMANDS", "register_subcommand"]
