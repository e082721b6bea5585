"""Where a question's time goes: the per-question split the harness records, and its means for the leaderboard.

Per question (record fields, seconds):

- ``decode_s``: this question's share of the wall time its video took to decode with decord (CPU, on a worker
  thread while the GPU answers earlier videos; the video's decode time divided by the number of its questions),
  or to read from the frame cache when the record says ``frames_cached`` (``--frame-cache``,
  :mod:`vlmsparse.eval.frame_cache`);
- ``preprocess_s``: chat template, video processor and the copy of the inputs to the device;
- ``vision_s``: the vision tower's forward;
- ``decoder_prefill_s``: the rest of the prefill up to the first token's logits (``prefill_s - vision_s``);
- ``generation_s``: the remaining generated tokens (``generate_s - prefill_s``);
- ``wall_s``: the harness's wall-clock time for the question, its share of waiting for a video to decode
  included: what the run pays per question once the model is loaded and warm.

The leaderboard row carries the mean of each (``<field>_mean``), ``questions_per_hour`` = 3600 / mean ``wall_s``, and
``frames_cached_share``: the share of answered questions whose frames came from the frame cache (so that a row's
``decode_s_mean`` and ``questions_per_hour`` say whether its run decoded its videos or read them back).
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["TIME_FIELDS", "TIME_COLUMNS", "CACHE_COLUMN", "question_times", "time_split"]

TIME_FIELDS: tuple[str, ...] = ("decode_s", "preprocess_s", "vision_s", "decoder_prefill_s", "generation_s")
#: leaderboard columns, in order
TIME_COLUMNS: tuple[str, ...] = tuple(f"{f}_mean" for f in TIME_FIELDS) + ("questions_per_hour",)
#: leaderboard column after ``TIME_COLUMNS``: the share of answered questions whose frames came from the frame cache
CACHE_COLUMN = "frames_cached_share"


def question_times(gen, *, decode_s: float | None, wall_s: float | None) -> dict:
    """Record fields of one answered question from its :class:`~vlmsparse.eval.model_io.Generation`."""
    vision = getattr(gen, "vision_s", None)
    return {
        "decode_s": decode_s,
        "preprocess_s": getattr(gen, "preprocess_s", None),
        "vision_s": vision,
        "decoder_prefill_s": gen.prefill_s - vision if vision is not None else None,
        "generation_s": gen.generate_s - gen.prefill_s,
        "wall_s": wall_s,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def time_split(records: Iterable[dict]) -> dict:
    """``TIME_COLUMNS`` and ``CACHE_COLUMN`` over the answered records (records without a field, e.g. older runs,
    are left out of it)."""
    answered = [r for r in records if r.get("error") is None]
    row = {}
    for name in TIME_FIELDS:
        row[f"{name}_mean"] = _mean([float(r[name]) for r in answered if r.get(name) is not None])
    wall = _mean([float(r["wall_s"]) for r in answered if r.get("wall_s") is not None])
    row["questions_per_hour"] = 3600.0 / wall if wall else None
    row[CACHE_COLUMN] = _mean([float(bool(r["frames_cached"])) for r in answered if r.get("frames_cached") is not None])
    return row
