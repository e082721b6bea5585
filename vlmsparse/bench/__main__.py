"""``python -m vlmsparse.bench <subcommand> [options]``: benchmark dispatcher.

Each subcommand lives in its own module (see :data:`vlmsparse.bench.SUBCOMMANDS`), which provides
``add_arguments(parser)``, ``run(args) -> int | None`` and optionally ``check_args(args)`` (raises ``ValueError``
for a bad flag, before anything runs). Only the chosen module is imported. Bad flags and a missing GPU are
one-line errors with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from . import SUBCOMMANDS


def _usage() -> str:
    names = "\n".join(f"  {name:<10} ({module})" for name, module in SUBCOMMANDS.items())
    return f"usage: python -m vlmsparse.bench <subcommand> [options]\n\nsubcommands:\n{names}\n"


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
    doc = (module.__doc__ or "").strip().splitlines()
    parser = _Parser(
        prog=f"python -m vlmsparse.bench {name}",
        description=doc[0] if doc else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(parser)
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
            sys.stderr.write(f"error: {exc.code}\n")
            return 2
        raise
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: rows written so far are kept in the CSV\n")
        return 130
    return int(result or 0)


class _Parser(argparse.ArgumentParser):
    """Argument errors on one line, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


if __name__ == "__main__":
    raise SystemExit(main())
