"""Per-question records: JSONL appended and flushed one question at a time, read back for resuming.

A run is interrupted at any point (Ctrl-C, a crash, a lost machine) and rerun with the same command: every
question that has a record is skipped, so nothing is lost and nothing is done twice. A line cut short by
the interruption is ignored when reading and the next record starts on a fresh line. With several
processes, each appends to its own shard file; the main process merges the shards into ``records.jsonl``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

RECORDS_FILE = "records.jsonl"
SHARD_PATTERN = "records.shard-*.jsonl"


def shard_path(run_dir: str | Path, rank: int, world_size: int) -> Path:
    """Where process ``rank`` appends its records: ``records.jsonl`` when it runs alone."""
    run_dir = Path(run_dir)
    if world_size <= 1:
        return run_dir / RECORDS_FILE
    return run_dir / f"records.shard-{rank}.jsonl"


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of one JSONL file; lines that do not parse (a write cut short) are skipped."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "question_id" in record:
                yield record


def run_files(run_dir: str | Path) -> list[Path]:
    """The merged file and any shard files of a run, merged file first."""
    run_dir = Path(run_dir)
    return [run_dir / RECORDS_FILE, *sorted(run_dir.glob(SHARD_PATTERN))]


def load_records(run_dir: str | Path) -> dict[str, dict]:
    """All records of a run by question id; where a question has several, the first one read wins."""
    records: dict[str, dict] = {}
    for path in run_files(run_dir):
        for record in iter_jsonl(path):
            records.setdefault(str(record["question_id"]), record)
    return records


def _write_atomic(path: Path, records: Iterable[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def merge_shards(run_dir: str | Path, order: list[str] | None = None) -> Path:
    """Fold every shard into ``records.jsonl`` (atomically, one record per question), then drop the shards.

    ``order`` (question ids) sorts the merged file; ids not in it go last.
    """
    run_dir = Path(run_dir)
    shards = sorted(run_dir.glob(SHARD_PATTERN))
    merged_path = run_dir / RECORDS_FILE
    if not shards and order is None:
        return merged_path
    records = load_records(run_dir)
    rank = {qid: i for i, qid in enumerate(order or [])}
    ordered = sorted(records.values(), key=lambda r: (rank.get(str(r["question_id"]), len(rank)), str(r["question_id"])))
    _write_atomic(merged_path, ordered)
    for shard in shards:
        shard.unlink()
    return merged_path


def drop_errors(run_dir: str | Path) -> int:
    """Remove records that carry an error (so a rerun tries those questions again); returns how many."""
    run_dir = Path(run_dir)
    merge_shards(run_dir)
    records = load_records(run_dir)
    kept = [r for r in records.values() if not r.get("error")]
    dropped = len(records) - len(kept)
    if dropped:
        _write_atomic(run_dir / RECORDS_FILE, kept)
    return dropped


class RecordWriter:
    """Appends one JSON record per line, flushed and synced to disk before :meth:`write` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        self._fh = self.path.open("a", encoding="utf-8")
        if needs_newline:
            self._fh.write("\n")
            self._fh.flush()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def write(self, record: dict) -> None:
        """Append ``record`` (must hold ``question_id``) and make it durable."""
        if "question_id" not in record:
            raise ValueError("a record must hold 'question_id'")
        self._fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
