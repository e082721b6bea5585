"""Shared pieces of the benchmarks: timing, dense baselines, environment stamp, where and how CSVs are written."""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Callable, Iterable

import torch

from vlmsparse.eval.leaderboard import write_rows
from vlmsparse.runs import folder_lock, new_run_folder

#: The project's tables of measured numbers; a benchmark adds to them only with ``--results``.
RESULTS_DIR = Path("results")


def environment() -> dict[str, str]:
    """Device, software versions and date, stamped on every results row."""
    import triton
    import transformers

    from vlmsparse import __version__

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "date": _dt.date.today().isoformat(),
        "device": device,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "vlmsparse": __version__,
    }


def time_ms(fn: Callable[[], object], warmup_ms: int = 50, rep_ms: int = 300) -> float:
    """Median time of ``fn`` in milliseconds, measured with CUDA events (``triton.testing.do_bench``)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def device_time_ms(fn: Callable[[], object], reps: int = 30, trials: int = 5) -> float:
    """Median device time of one call of ``fn`` in milliseconds, with the host ahead of the device.

    The device is first kept busy (``torch.cuda._sleep``) while the host queues ``reps`` calls, so the calls run
    back to back and their CUDA-event time is what the device spends on them, not what the host spends launching
    them: the time a call costs inside a model's forward pass, where the host runs ahead. The sleep grows until
    the device is still busy when the host has queued every call (else the number would be host time again).
    """
    import time

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    host_s = (time.perf_counter() - t0) / 3
    cycles = int(max(1e6, 4e9 * host_s * reps))  # about twice the host's queueing time at 2 GHz
    times: list[float] = []
    while len(times) < trials:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cycles)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        ahead = not end.query()  # the device had not caught up with the host
        torch.cuda.synchronize()
        if not ahead:
            if cycles > 1e12:
                raise RuntimeError("the device kept up with the host at every sleep length; cannot separate them")
            cycles *= 4
            continue
        times.append(start.elapsed_time(end) / reps)
    return float(sorted(times)[len(times) // 2])


def causal_attention_flops(batch: int, heads: int, q_len: int, k_len: int, head_dim: int, causal: bool = True) -> float:
    """Matmul FLOPs of dense attention (QK^T and PV) over the causally visible (query, key) pairs."""
    if causal:
        offset = k_len - q_len
        pairs = sum(min(i + offset + 1, k_len) for i in range(q_len)) if q_len < 4096 else (
            q_len * (offset + 1) + q_len * (q_len - 1) / 2
        )
    else:
        pairs = q_len * k_len
    return 4.0 * batch * heads * head_dim * pairs


def sdpa_dense(backend: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Dense causal GQA attention through ``torch.nn.functional.scaled_dot_product_attention`` on one backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
    if backend not in backends:
        raise ValueError(f"backend must be one of {sorted(backends)}, got {backend!r}")

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backends[backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    return run


def add_output_arguments(parser, name: str) -> None:
    """``--out DIR`` and ``--results`` for a benchmark that writes ``<name>.csv``."""
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"run folder for {name}.csv (default: a new runs/{name}-<date>-<time>/); rows already in that "
        "folder's file are kept",
    )
    parser.add_argument(
        "--results",
        action="store_true",
        help=f"also add the rows to {RESULTS_DIR / (name + '.csv')}, the project's table of measured numbers "
        "(default: only the run folder)",
    )


def output_csvs(args, name: str) -> list[Path]:
    """The CSV files a benchmark run writes: its run folder's, and ``results/<name>.csv`` with ``--results``."""
    folder = Path(args.out) if args.out else new_run_folder(name)
    paths = [folder / f"{name}.csv"]
    results = RESULTS_DIR / f"{name}.csv"
    if getattr(args, "results", False) and results.resolve() != paths[0].resolve():
        paths.append(results)
    return paths


def write_csv(path: str | os.PathLike, rows: Iterable[dict], append: bool = True) -> Path:
    """Write (or append) rows to a CSV, the header being the union of the rows' keys in first-seen order.

    The folder is locked while the file is read and replaced (:func:`vlmsparse.runs.folder_lock`), and the new
    file is written under a name of this process's own first: runs that share a folder never lose rows."""
    rows = list(rows)
    path = Path(path)
    with folder_lock(path):
        old: list[dict] = []
        if append and path.exists():
            with path.open(newline="") as f:
                old = list(csv.DictReader(f))
        _replace_csv(path, old + rows)
    return path


def _replace_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` under the union of their keys (first-seen order), every digit kept, written atomically."""
    fields: list[str] = []
    for r in rows:
        for key in r:
            if key not in fields:
                fields.append(key)
    write_rows(path, rows, fields, cell=cell_as_is)


def cell_as_is(value) -> str:
    """A table cell with every digit kept (``None`` empty), as the benchmarks write their tables."""
    return "" if value is None else str(value)


class RunTable:
    """One run's rows in a CSV that other runs may share (a run folder given twice with ``--out``, or two runs at
    once): :meth:`save` rewrites this run's rows as they grow, so a run cut short keeps what it measured, and
    leaves every other row of the file as it found it. This run's rows carry ``run``: start time and process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.run = f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"

    def save(self, rows: Iterable[dict]) -> Path:
        mine = [{**r, "run": self.run} for r in rows]
        with folder_lock(self.path):
            old: list[dict] = []
            if self.path.exists():
                with self.path.open(newline="") as f:
                    old = [r for r in csv.DictReader(f) if r.get("run") != self.run]
            _replace_csv(self.path, old + mine)
        return self.path


class SavedRows(list):
    """A run's rows, saved to its run folder's table (:class:`RunTable`) as they are added (``append``,
    ``extend``, ``+=``): a run cut short (a time limit, Ctrl-C) keeps every row it measured."""

    def __init__(self, table: RunTable):
        super().__init__()
        self.table = table

    def append(self, row: dict) -> None:
        super().append(row)
        self.table.save(self)

    def extend(self, rows: Iterable[dict]) -> None:
        super().extend(rows)
        self.table.save(self)

    def __iadd__(self, rows: Iterable[dict]) -> "SavedRows":
        self.extend(rows)
        return self


class RunOutput:
    """Where a benchmark's rows go: ``rows`` (a :class:`SavedRows`) saves each to the run folder's ``<name>.csv``
    as it is measured, rows of other runs in that file kept; :meth:`finish` adds the whole run's rows to
    ``results/<name>.csv`` where ``--results`` asked for it (never a partial run's)."""

    def __init__(self, args, name: str):
        self.paths = output_csvs(args, name)
        self.rows = SavedRows(RunTable(self.paths[0]))

    def finish(self) -> str:
        """Add the rows to ``results/`` (``--results``); a line that says where they are."""
        for path in self.paths[1:]:
            write_csv(path, self.rows)
        return f"wrote {len(self.rows)} rows to {', '.join(str(p) for p in self.paths)}"


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned text table."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(x.rjust(w) for x, w in zip(row, widths)))


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def require_positive(args, *names: str, allow_zero: bool = False) -> None:
    """``ValueError`` naming the flag unless every value of ``args.<name>`` (a number or a list) is > 0 (>= 0)."""
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not (item >= 0 if allow_zero else item > 0):
                bound = ">= 0" if allow_zero else "> 0"
                raise ValueError(f"--{name.replace('_', '-')} must be {bound}, got {item}")


def require_heads(heads_q: int | None, heads_kv: int | None) -> None:
    """``ValueError`` unless the query heads are a multiple of the key/value heads (grouped-query attention)."""
    if heads_q is not None and heads_kv is not None and heads_q % heads_kv:
        raise ValueError(f"--heads-q ({heads_q}) must be a multiple of --heads-kv ({heads_kv})")


def require_head_dim(head_dim: int) -> None:
    """``ValueError`` unless the kernel takes ``head_dim`` (16 to 256)."""
    if not 16 <= head_dim <= 256:
        raise ValueError(f"--head-dim must be between 16 and 256, got {head_dim}")


def check_writable_output(args) -> None:
    """``ValueError`` unless the run folder (``--out``, else ``runs/``) and, with ``--results``, ``results/`` can be
    written (folders created as needed), checked up front so that a long benchmark does not fail at its end."""
    from vlmsparse.eval.errors import write_problem
    from vlmsparse.runs import RUNS_DIR

    targets = [(Path(args.out) if args.out else RUNS_DIR, "--out")]
    if getattr(args, "results", False):
        targets.append((RESULTS_DIR, "--results"))
    for folder, flag in targets:
        shown = f"{flag} {folder}" if flag == "--out" else f"--results ({folder}/)"
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{shown} is a file; pass a folder for the CSV")
        probe_dir = folder.absolute()
        while not probe_dir.exists() and probe_dir != probe_dir.parent:  # the first folder that exists: create nothing
            probe_dir = probe_dir.parent
        reason = write_problem(probe_dir) if probe_dir.is_dir() else "not a folder"
        if reason is not None:
            raise ValueError(f"{shown} cannot be written ({reason}); pass a folder you can write to")


def check_inputs(args, generated_flags: dict[str, object]) -> None:
    """With ``--inputs`` (captured q/k/v, ``bench capture``): ``ValueError`` if a flag that shapes the generated
    inputs was given beside it (``generated_flags``: attribute name -> its default), or if a file is not a readable
    capture; each file is read once here, before any work."""
    if not getattr(args, "inputs", None):
        return
    given = [f"--{name.replace('_', '-')}" for name, default in generated_flags.items() if getattr(args, name) != default]
    if given:
        raise ValueError(f"{', '.join(given)} choose generated inputs; --inputs brings its own")
    from vlmsparse.model.capture import load_capture

    for path in args.inputs:
        load_capture(path)
