"""Benchmarks the harness runs, by name (``--bench``): each knows its splits and how to run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: its name, its splits (the first is the default), its run function and, where it has them,
    its model inputs without scoring (``samples``; see :mod:`vlmsparse.eval.samples`)."""

    name: str
    splits: tuple[str, ...]
    default_split: str
    run: Callable  # (EvalOptions) -> list[dict] leaderboard rows
    description: str = ""
    samples: Callable | None = None  # (EvalOptions) -> list[PromptSample]
    #: (EvalOptions, {key: value}) -> None: the benchmark's own options for ``samples`` (``--bench-option`` keys
    #: that are no field of EvalOptions, e.g. vniah's grid); ValueError for a key it does not know
    configure: Callable | None = None


def _videomme() -> Benchmark:
    from .runner import run_videomme
    from .samples import videomme_samples
    from .videomme import SPLITS

    return Benchmark(
        name="videomme",
        splits=SPLITS,
        default_split="all",
        run=run_videomme,
        description="Video-MME without subtitles: 2700 four-option questions on 900 videos, short/medium/long",
        samples=videomme_samples,
    )


def _vniah() -> Benchmark:
    from .vniah_run import configure_vniah, run_vniah, vniah_samples

    return Benchmark(
        name="vniah",
        splits=("all",),
        default_split="all",
        run=run_vniah,
        description="video needle in a haystack: a generated needle clip at a depth of a long haystack, four options",
        samples=vniah_samples,
        configure=configure_vniah,
    )


#: name -> factory (called on use, so importing the registry stays cheap)
_BENCHMARKS: dict[str, Callable[[], Benchmark]] = {"videomme": _videomme, "vniah": _vniah}


def register_benchmark(name: str, factory: Callable[[], Benchmark]) -> None:
    """Add a benchmark under ``name`` (``factory`` builds its :class:`Benchmark`)."""
    _BENCHMARKS[name] = factory


def available_benchmarks() -> list[str]:
    """Names accepted by ``--bench``."""
    return sorted(_BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered under ``name``; ValueError lists the known ones."""
    if name not in _BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {available_benchmarks()}")
    return _BENCHMARKS[name]()
