"""Video-MME as distributed: the question table (a parquet file or the hub dataset) and the video files.

Layout of a local copy (``--data-dir``), as the dataset is published::

    <data-dir>/videomme/test-00000-of-00001.parquet   # the question table (any *.parquet under the folder works)
    <data-dir>/data/<videoID>.mp4                     # the videos (.mp4, .MP4 or .mkv), unzipped from the archives

Columns of the table: ``video_id`` (``"001"``), ``duration`` (``short`` / ``medium`` / ``long``), ``domain``,
``sub_category``, ``url``, ``videoID`` (the YouTube id, which names the file), ``question_id`` (``"001-1"``),
``task_type``, ``question``, ``options`` (four strings ``"A. ..."``) and ``answer`` (a letter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

#: The hub copy of the question table that lmms-eval also reads.
HUB_DATASET = "lmms-lab/Video-MME"
HUB_CONFIG = "videomme"
HUB_SPLIT = "test"
#: ``metadata`` value (``--metadata hub``) that reads the question table from the hub instead of a file.
HUB_METADATA = "hub"

DURATIONS = ("short", "medium", "long")
SPLITS = (*DURATIONS, "all")
COLUMNS = (
    "video_id",
    "duration",
    "domain",
    "sub_category",
    "url",
    "videoID",
    "question_id",
    "task_type",
    "question",
    "options",
    "answer",
)
VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv")
OPTION_LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    """One Video-MME question; ``video_file_id`` (the ``videoID`` column) names the video file."""

    question_id: str
    video_id: str
    video_file_id: str
    duration: str
    domain: str
    sub_category: str
    task_type: str
    question: str
    options: tuple[str, ...]
    answer: str
    url: str = ""

    @classmethod
    def from_row(cls, row: dict) -> "Question":
        """Build from a table row with the published column names; ValueError says what is wrong."""
        missing = [c for c in COLUMNS if c not in row and c != "url"]
        if missing:
            raise ValueError(f"Video-MME row lacks columns {missing}; expected the published columns {list(COLUMNS)}")
        qid = str(row["question_id"])
        duration = str(row["duration"]).strip().lower()
        if duration not in DURATIONS:
            raise ValueError(f"question {qid}: duration must be one of {DURATIONS}, got {row['duration']!r}")
        options = tuple(str(o) for o in row["options"])
        if len(options) != len(OPTION_LETTERS):
            raise ValueError(f"question {qid}: expected {len(OPTION_LETTERS)} options, got {len(options)}")
        answer = str(row["answer"]).strip().upper()
        if answer not in OPTION_LETTERS:
            raise ValueError(f"question {qid}: answer must be one of {OPTION_LETTERS}, got {row['answer']!r}")
        return cls(
            question_id=qid,
            video_id=str(row["video_id"]),
            video_file_id=str(row["videoID"]),
            duration=duration,
            domain=str(row["domain"]),
            sub_category=str(row["sub_category"]),
            task_type=str(row["task_type"]),
            question=str(row["question"]),
            options=options,
            answer=answer,
            url=str(row.get("url", "") or ""),
        )


def _rows_to_questions(rows: Iterable[dict]) -> list[Question]:
    questions = [Question.from_row(r) for r in rows]
    seen: set[str] = set()
    for q in questions:
        if q.question_id in seen:
            raise ValueError(f"question_id {q.question_id!r} appears twice in the Video-MME table")
        seen.add(q.question_id)
    return questions


def find_metadata_file(data_dir: str | Path) -> Path | None:
    """The question table under ``data_dir``: ``videomme/test-*.parquet`` first, else any single parquet file."""
    root = Path(data_dir)
    preferred = sorted((root / "videomme").glob("test-*.parquet"))
    if preferred:
        return preferred[0]
    found = sorted(p for p in root.rglob("*.parquet") if "data" not in p.relative_to(root).parts[:1])
    return found[0] if found else None


def read_parquet(path: str | Path) -> list[Question]:
    """Questions from a local parquet file with the published columns."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's errors for a file that is not parquet, or is cut short
        raise ValueError(
            f"{path} cannot be read as a parquet file ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            "pass the Video-MME question table (videomme/test-00000-of-00001.parquet)"
        ) from exc
    missing = [c for c in COLUMNS if c not in table.column_names and c != "url"]
    if missing:
        raise ValueError(
            f"{path} lacks Video-MME columns {missing}; it has {table.column_names}. "
            f"Pass the question table as distributed (videomme/test-00000-of-00001.parquet)."
        )
    try:
        return _rows_to_questions(table.to_pylist())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_from_hub(dataset: str = HUB_DATASET, config: str = HUB_CONFIG, split: str = HUB_SPLIT) -> list[Question]:
    """Questions from the hub through ``datasets`` (needs network access and, for gated copies, a token)."""
    import datasets

    ds = datasets.load_dataset(dataset, config, split=split)
    return _rows_to_questions(ds)


def load_questions(data_dir: str | Path | None = None, metadata: str | Path | None = None) -> tuple[list[Question], str]:
    """Video-MME questions and a short description of where they came from.

    ``metadata`` (a parquet file) wins; ``metadata="hub"`` reads the hub dataset; else the table under
    ``data_dir``, which must exist (``FileNotFoundError`` says what to pass: a local folder never falls back
    to the network); with neither, the hub dataset.
    """
    if metadata is not None and str(metadata) != HUB_METADATA:
        path = Path(metadata)
        if not path.is_file():
            raise FileNotFoundError(f"metadata file {path} does not exist; pass the Video-MME parquet file")
        return read_parquet(path), str(path)
    if data_dir is not None and metadata is None:
        root = Path(data_dir)
        if not root.is_dir():
            raise FileNotFoundError(
                f"Video-MME folder {root} does not exist; pass the folder holding videomme/test-*.parquet and "
                "data/<videoID>.mp4 (python -m vlmsparse.eval --demo runs on generated data instead)"
            )
        found = find_metadata_file(root)
        if found is None:
            raise FileNotFoundError(
                f"no Video-MME question table under {root} (looked for videomme/test-*.parquet and any *.parquet "
                f"outside data/): put videomme/test-00000-of-00001.parquet there, pass --metadata FILE, or "
                f"--metadata {HUB_METADATA} to read {HUB_DATASET} from the hub"
            )
        return read_parquet(found), str(found)
    try:
        questions = load_from_hub()
    except Exception as exc:  # offline, gated, renamed: say what to do instead
        raise FileNotFoundError(
            f"Video-MME question table not found: loading {HUB_DATASET} ({HUB_CONFIG}/{HUB_SPLIT}) from the hub "
            f"failed ({type(exc).__name__}: {exc}). Put videomme/test-00000-of-00001.parquet under --data-dir "
            "or pass --metadata FILE."
        ) from exc
    return questions, f"hub:{HUB_DATASET}/{HUB_CONFIG}/{HUB_SPLIT}"


def select_split(questions: Sequence[Question], split: str) -> list[Question]:
    """Questions of one duration split (``short`` / ``medium`` / ``long``) or all of them (``all``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return list(questions)
    return [q for q in questions if q.duration == split]


def find_video(data_dir: str | Path, video_file_id: str) -> Path | None:
    """``<data_dir>/data/<videoID>`` with any of the published extensions, or None if absent."""
    base = Path(data_dir) / "data"
    for ext in VIDEO_EXTENSIONS:
        candidate = base / f"{video_file_id}{ext}"
        if candidate.is_file():
            return candidate
    return None


def locate_videos(data_dir: str | Path, questions: Sequence[Question]) -> tuple[dict[str, Path], list[str]]:
    """Map each video file id of ``questions`` to its path; also the sorted list of ids with no file."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for vid in sorted({q.video_file_id for q in questions}):
        path = find_video(data_dir, vid)
        if path is None:
            missing.append(vid)
        else:
            found[vid] = path
    return found, missing
