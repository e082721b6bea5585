"""The benchmarks' command lines: plain help where every flag says what it does, and examples that parse."""

from __future__ import annotations

import shlex

import pytest

from vlmsparse.bench import SUBCOMMANDS
from vlmsparse.bench.__main__ import build_parser, load_subcommand, main


def _examples(module) -> list[list[str]]:
    lines = [line.strip() for line in (getattr(module, "EXAMPLES", "") or "").splitlines()]
    commands = [line.split("#")[0].strip() for line in lines if line.startswith("python -m vlmsparse.bench ")]
    return [shlex.split(c)[4:] for c in commands]  # after "python -m vlmsparse.bench <name>"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_is_plain_and_complete(name, capsys):
    module = load_subcommand(name)
    parser = build_parser(name, module)
    text = parser.format_help()
    assert "``" not in text and ":mod:" not in text and ":func:" not in text
    assert "(default: True)" not in text and "(default: False)" not in text
    for action in parser._actions:
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        assert action.help.count("default") <= 1, f"{name}: {action.option_strings} says its default twice"
    assert "--out" in text
    assert "--results" in text or not getattr(module, "WRITES_CSV", True)
    examples = _examples(module)
    assert examples, f"{name} shows no example"
    for argv in examples:
        parser.parse_args(argv)  # every flag and value in the examples exists


def test_dispatcher_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS) and "--results" in out and "vlmsparse.bench." not in out


def test_no_check_help_says_what_it_does(capsys):
    parser = build_parser("kernel", load_subcommand("kernel"))
    (action,) = [a for a in parser._actions if "--no-check" in a.option_strings]
    assert "skip" in action.help and parser.parse_args(["--no-check"]).check is False
    assert parser.parse_args([]).check is True
