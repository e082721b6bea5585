"""Per-question records: JSONL appended and synced one question at a time, read back for resuming.

A run is interrupted at any point (Ctrl-C, SIGTERM, ``kill -9``, a full disk, a lost machine) and rerun with
the same command: every question that has a whole record is skipped, so nothing is lost and nothing is done
twice. A line cut short by an interruption is ignored when reading, and the next record starts on a fresh line.

Several processes may write to one run folder at once (the processes of one ``accelerate launch``, or the same
command started twice). Every change to the record files is made under the run's lock file (``records.lock``):
a record is appended only if no whole record of its question is on disk yet (so nothing is written twice), and
it is appended by path, with the file opened and closed under the lock, so a merge that replaces
``records.jsonl`` never leaves a process appending to an unlinked file. Processes of one launch append to their
own shard files; the main process merges the shards into ``records.jsonl``. Lines that are not whole records
(cut short, hand-edited, wrong types) are moved to ``records.rejected.jsonl`` by the merge, never dropped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import output_error
from .locks import exclusive

RECORDS_FILE = "records.jsonl"
SHARD_PATTERN = "records.shard-*.jsonl"
REJECTED_FILE = "records.rejected.jsonl"
LOCK_FILE = "records.lock"
_TMP_PATTERN = f".{RECORDS_FILE}.tmp-*"

#: ``check(record) -> problem or None``: whether a record is whole (see ``record_fields.check_record``).
RecordCheck = Callable[[dict], "str | None"]


def _accept_any(record: dict) -> str | None:
    return None


def shard_path(run_dir: str | Path, rank: int, world_size: int) -> Path:
    """Where process ``rank`` appends its records: ``records.jsonl`` when it runs alone."""
    run_dir = Path(run_dir)
    if world_size <= 1:
        return run_dir / RECORDS_FILE
    return run_dir / f"records.shard-{rank}.jsonl"


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(record, dict) and isinstance(record.get("question_id"), str) and record["question_id"]:
        return record
    return None


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of one JSONL file; lines that do not parse, or hold no ``question_id``, are skipped."""
    for _, _, record in _iter_lines(Path(path)):
        if record is not None:
            yield record


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes, dict | None]]:
    """``(line number, raw line, record or None)`` for every non-blank line of ``path``."""
    if not path.is_file():
        return
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line, _parse(line)


def run_files(run_dir: str | Path) -> list[Path]:
    """The merged file and any shard files of a run, merged file first."""
    run_dir = Path(run_dir)
    return [run_dir / RECORDS_FILE, *sorted(run_dir.glob(SHARD_PATTERN))]


@dataclass
class RunRecords:
    """What a run folder holds: the whole records by question (first one read wins), and what is not whole."""

    records: dict[str, dict] = field(default_factory=dict)
    #: ``(where, problem)`` for each line that is not a whole record, e.g. ``("records.jsonl:3", "...")``.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: raw lines that are not whole records, as read (moved to ``records.rejected.jsonl`` by a merge)
    rejected_lines: list[bytes] = field(default_factory=list)

    def describe_rejected(self, limit: int = 3) -> str:
        """Short text naming the first rejected lines and why."""
        shown = "; ".join(f"{where}: {problem}" for where, problem in self.rejected[:limit])
        more = f"; and {len(self.rejected) - limit} more" if len(self.rejected) > limit else ""
        return shown + more


def read_run(run_dir: str | Path, check: RecordCheck | None = None) -> RunRecords:
    """Every record file of a run, checked with ``check`` (default: any line with a ``question_id`` counts)."""
    check = check or _accept_any
    out = RunRecords()
    for path in run_files(run_dir):
        for number, line, record in _iter_lines(path):
            where = f"{path.name}:{number}"
            problem = "not a JSON object with a question_id (cut short or edited)" if record is None else check(record)
            if problem is None:
                out.records.setdefault(record["question_id"], record)
            else:
                out.rejected.append((where, problem))
                out.rejected_lines.append(line if line.endswith(b"\n") else line + b"\n")
    return out


def load_records(run_dir: str | Path, check: RecordCheck | None = None) -> dict[str, dict]:
    """All whole records of a run by question id; where a question has several, the first one read wins."""
    return read_run(run_dir, check).records


def _write_replace(path: Path, lines: list[bytes]) -> None:
    """Replace ``path`` by ``lines`` atomically (temporary file beside it, synced, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append(path: Path, lines: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        _write_all(fd, b"".join(lines))
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def merge_shards(run_dir: str | Path, order: list[str] | None = None, *, check: RecordCheck | None = None) -> Path:
    """Fold every shard into ``records.jsonl`` (one whole record per question), then drop the shards.

    ``order`` (question ids) sorts the merged file; ids not in it go last (without it the file keeps its order).
    Lines that ``check`` finds not whole are appended to ``records.rejected.jsonl``. Runs under the run's lock,
    so other processes may keep appending records meanwhile. A failed write (a full disk) leaves the record
    files as they were and raises :class:`~vlmsparse.eval.errors.OutputError`.
    """
    _merge(Path(run_dir), order, check, drop=None)
    return Path(run_dir) / RECORDS_FILE


def drop_errors(run_dir: str | Path, check: RecordCheck | None = None) -> int:
    """Remove records that carry an error (so a rerun tries those questions again); returns how many."""
    return _merge(Path(run_dir), None, check, drop=lambda r: bool(r.get("error")))


def _merge(run_dir: Path, order: list[str] | None, check: RecordCheck | None, drop) -> int:
    merged_path = run_dir / RECORDS_FILE
    try:
        with exclusive(run_dir / LOCK_FILE):
            for stale in run_dir.glob(_TMP_PATTERN):  # left by a merge that was killed (we hold the lock)
                stale.unlink(missing_ok=True)
            shards = sorted(run_dir.glob(SHARD_PATTERN))
            run = read_run(run_dir, check)
            kept = [r for r in run.records.values() if not (drop and drop(r))]
            current = [r["question_id"] for r in iter_jsonl(merged_path)]
            rank = {qid: i for i, qid in enumerate(order if order is not None else dict.fromkeys(current))}
            kept.sort(key=lambda r: (rank.get(r["question_id"], len(rank)), r["question_id"]))
            if not shards and not run.rejected and current == [r["question_id"] for r in kept]:
                return 0
            if run.rejected_lines:
                _append(run_dir / REJECTED_FILE, run.rejected_lines)
            if kept or merged_path.exists():
                _write_replace(merged_path, [_dump(r) for r in kept])
            for shard in shards:
                shard.unlink()
            return len(run.records) - len(kept)
    except OSError as exc:
        raise output_error("merging the records of", run_dir, exc) from exc


class _FileIndex:
    """Question ids of the whole records in one file, read incrementally (only what was appended since)."""

    def __init__(self) -> None:
        self.inode: tuple[int, int] | None = None
        self.offset = 0
        self.ids: set[str] = set()

    def refresh(self, path: Path, check: RecordCheck) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            self.inode, self.offset, self.ids = None, 0, set()
            return
        inode = (st.st_dev, st.st_ino)
        if inode != self.inode or st.st_size < self.offset:  # replaced by a merge: read it again
            self.inode, self.offset, self.ids = inode, 0, set()
        if st.st_size == self.offset:
            return
        with path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a last line without its newline is not whole yet: read it next time
        for line in data[:end].splitlines():
            record = _parse(line) if line.strip() else None
            if record is not None and check(record) is None:
                self.ids.add(record["question_id"])
        self.offset += end


class RecordWriter:
    """Appends one JSON record per line to ``path``, synced to disk before :meth:`write` returns.

    ``write`` holds the run folder's lock, appends only when no whole record (by ``check``) of the question is in
    any record file of the folder, and says whether it did. An ``OSError`` (a full disk, a folder turned
    read-only) becomes an :class:`~vlmsparse.eval.errors.OutputError`; what was written before stays.
    """

    def __init__(self, path: str | Path, check: RecordCheck | None = None):
        self.path = Path(path)
        self.run_dir = self.path.parent
        self.check = check or _accept_any
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error("creating", self.run_dir, exc) from exc
        self._index: dict[Path, _FileIndex] = {}

    def recorded(self) -> set[str]:
        """Question ids with a whole record in the run folder now (call under the lock for a stable answer)."""
        files = run_files(self.run_dir)
        for stale in set(self._index) - set(files):
            del self._index[stale]
        for path in files:
            self._index.setdefault(path, _FileIndex()).refresh(path, self.check)
        return set().union(*(ix.ids for ix in self._index.values()))

    def pending(self, question_ids: list[str]) -> list[str]:
        """Those of ``question_ids`` that no record file of the run answers yet."""
        with exclusive(self.run_dir / LOCK_FILE):
            done = self.recorded()
        return [qid for qid in question_ids if qid not in done]

    def write(self, record: dict) -> bool:
        """Append ``record`` (must hold ``question_id``) and make it durable; False if its question has one."""
        if not isinstance(record.get("question_id"), str):
            raise ValueError("a record must hold 'question_id' (a string)")
        line = _dump(record)
        try:
            with exclusive(self.run_dir / LOCK_FILE):
                if record["question_id"] in self.recorded():
                    return False
                lines = [line]
                if self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline():
                    lines.insert(0, b"\n")  # the last write was cut short: start on a fresh line
                _append(self.path, lines)
        except OSError as exc:
            raise output_error("writing a record to", self.path, exc) from exc
        return True

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def close(self) -> None:
        """Nothing stays open between writes; kept for ``with`` blocks."""

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
