"""What a whole Video-MME record holds, checked when a run resumes (a record that is not whole is not counted).

A record is whole when it has every field the scores read, each of the right type and range, and agrees with
its question (same answer and duration, ``correct`` matching the prediction). Records that fail are reported
and their questions answered again; they are never counted, and a merge moves them to
``records.rejected.jsonl``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .answers import is_correct
from .videomme import DURATIONS, Question

#: Fields of every record, answered or not, with the check each value must pass.
COMMON_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "question_id": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "videoID": ("a string", lambda v: isinstance(v, str)),
    "duration": (f"one of {DURATIONS}", lambda v: v in DURATIONS),
    "task_type": ("a string", lambda v: isinstance(v, str)),
    "answer": ("a letter A-D", lambda v: v in ("A", "B", "C", "D")),
    "correct": ("true or false", lambda v: isinstance(v, bool)),
    "error": ("null or a string", lambda v: v is None or isinstance(v, str)),
}


def _number(lo: float, hi: float, *, optional: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if v is None:
            return optional
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi

    return ok


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


#: Fields of an answered record (``error`` null).
ANSWER_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "prediction": ("a string", lambda v: isinstance(v, str)),
    "sparsity": ("null or a number in [0, 1]", _number(0.0, 1.0, optional=True)),
    "visual_sparsity": ("null or a number in [0, 1]", _number(0.0, 1.0, optional=True)),
    "prefill_s": ("a number >= 0", _number(0.0, math.inf)),
    "num_tokens": ("a count", _count),
    "num_visual_tokens": ("a count", _count),
    "frames": ("a count", _count),
    "frame_size": ("[height, width]", lambda v: isinstance(v, list) and len(v) == 2 and all(_count(x) for x in v)),
    "peak_mem_gib": ("null or a number >= 0", _number(0.0, math.inf, optional=True)),
}


def check_record(record: dict, question: Question | None = None) -> str | None:
    """Why ``record`` is not whole (``None`` when it is); ``question``, when given, must be its question."""
    for fields in (COMMON_FIELDS, ANSWER_FIELDS if record.get("error") is None else {}):
        for name, (what, ok) in fields.items():
            if name not in record:
                return f"no {name!r}"
            if not ok(record[name]):
                return f"{name!r} is {record[name]!r}, not {what}"
    if record["error"] is None and record["correct"] != is_correct(record["prediction"], record["answer"]):
        return f"'correct' is {record['correct']} but the prediction {record['prediction']!r} vs answer {record['answer']!r} says otherwise"
    if record["error"] is not None and record["correct"]:
        return "a record with an error cannot be correct"
    if question is not None:
        for name, expected in (("answer", question.answer), ("duration", question.duration), ("videoID", question.video_file_id)):
            if record[name] != expected:
                return f"{name!r} is {record[name]!r} but the question table says {expected!r}"
    return None


def record_check(questions: dict[str, Question]) -> Callable[[dict], str | None]:
    """A :data:`~vlmsparse.eval.records.RecordCheck` against the run's question table."""

    def check(record: dict) -> str | None:
        return check_record(record, questions.get(record.get("question_id")))

    return check
