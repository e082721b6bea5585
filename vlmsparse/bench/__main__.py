"""``python -m vlmsparse.bench <subcommand> [options]``: benchmark dispatcher.

Each subcommand lives in its own module (see :data:`vlmsparse.bench.SUBCOMMANDS`), which provides
``add_arguments(parser)``, ``run(args) -> int | None``, optionally ``check_args(args)`` (raises ``ValueError``
for a bad flag, before anything runs) and ``EXAMPLES`` (shown under ``--help``). Only the chosen module is
imported. The help text is the module docstring's first paragraph, made plain; every flag's help says its
default once. Bad flags and a missing GPU are one-line errors with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import textwrap
from types import ModuleType

from . import SUBCOMMANDS

SUMMARIES = {
    "fidelity": "sparsity vs output error and recall of every planner on synthetic or captured q/k/v (CPU or GPU)",
    "kernel": "the pyramid kernel checked and timed against dense SDPA (GPU)",
    "prefill": "a Qwen2.5-VL-7B-shaped decoder prefill, each method against the unpatched model (GPU)",
    "pareto": "the time vs error frontier of every planner over input families or captured q/k/v (GPU)",
    "question": "where a whole question's time goes (vision tower, prefill, generation) per method (GPU)",
    "decode": "how fast the harness's CPU side decodes and samples videos (decord)",
    "prefill-qwen3-vl": "a Qwen3-VL-8B-shaped decoder prefill with frame timestamps, DeepStack and M-RoPE (GPU)",
    "capture": "a model's own q/k/v from one video prefill, saved for fidelity and pareto --inputs (CPU or GPU)",
}


def _usage() -> str:
    names = "\n".join(f"  {name:<10} {SUMMARIES.get(name, module)}" for name, module in SUBCOMMANDS.items())
    return (
        "usage: python -m vlmsparse.bench <subcommand> [options]\n\n"
        f"subcommands:\n{names}\n\n"
        "Each writes its CSV into a new run folder, runs/<subcommand>-<date>-<time>/ (--out DIR to choose one), "
        "and adds its rows to results/<subcommand>.csv only with --results (capture writes the q/k/v file named by "
        "--out).\n"
        "python -m vlmsparse.bench <subcommand> --help lists its options and examples.\n"
    )


def plain(text: str) -> str:
    """Docstring text made plain for a terminal: RST literals and roles lose their markup."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def description(module: ModuleType) -> str | None:
    """The first paragraph of the module's docstring, plain, wrapped."""
    doc = (module.__doc__ or "").strip()
    if not doc:
        return None
    return textwrap.fill(" ".join(plain(doc.split("\n\n")[0]).split()), width=100)


def load_subcommand(name: str) -> ModuleType:
    """Import the module behind subcommand ``name`` (``ValueError`` if unknown or not there)."""
    if name not in SUBCOMMANDS:
        raise ValueError(f"unknown benchmark {name!r}; available: {sorted(SUBCOMMANDS)}")
    path = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and path.startswith(exc.name):
            raise ValueError(
                f"benchmark {name!r} needs the module {path}, which does not exist in this checkout yet"
            ) from exc
        raise
    for attr in ("add_arguments", "run"):
        if not callable(getattr(module, attr, None)):
            raise ValueError(f"{path} must define {attr}() to be a benchmark subcommand")
    return module


class _Parser(argparse.ArgumentParser):
    """Argument errors on one line, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    """The argument parser of subcommand ``name`` (defaults are written in each flag's help, once)."""
    parser = _Parser(
        prog=f"python -m vlmsparse.bench {name}",
        description=description(module),
        epilog=getattr(module, "EXAMPLES", None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    try:
        module = load_subcommand(name)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n\n{_usage()}")
        return 2
    parser = build_parser(name, module)
    args = parser.parse_args(rest)
    check = getattr(module, "check_args", None)
    if callable(check):
        try:
            check(args)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        result = module.run(args)
    except SystemExit as exc:  # a subcommand stops with a message (e.g. no CUDA device)
        if isinstance(exc.code, str):
            message = exc.code[len("error: "):] if exc.code.startswith("error: ") else exc.code
            sys.stderr.write(f"error: {message}\n")
            return 2
        raise
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: rows written so far are kept in the CSV\n")
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
