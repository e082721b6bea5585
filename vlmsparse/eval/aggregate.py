"""Scores of a run from its per-question records: accuracy per duration split and per task type.

Accuracy is over the questions that got an answer from the model (a record without ``error``); questions
whose video failed to decode are counted apart (``n_errors``), and so are those skipped because their
video file is missing (``n_missing``, known to the runner, not to the records). Sparsity figures are means
over questions, each question's figure being exact over its layers and heads.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from .videomme import DURATIONS


@dataclass
class Tally:
    """Running count of answered questions and correct answers, with sums of the per-question figures."""

    answered: int = 0
    correct: int = 0
    errors: int = 0
    sparsity_sum: float = 0.0
    sparsity_n: int = 0
    visual_sum: float = 0.0
    visual_n: int = 0
    prefill_sum: float = 0.0
    prefill_n: int = 0
    answer_prob_sum: float = 0.0
    answer_prob_n: int = 0

    def add(self, record: dict) -> None:
        if record.get("error"):
            self.errors += 1
            return
        self.answered += 1
        self.correct += int(bool(record.get("correct")))
        if record.get("sparsity") is not None:
            self.sparsity_sum += float(record["sparsity"])
            self.sparsity_n += 1
        if record.get("visual_sparsity") is not None:
            self.visual_sum += float(record["visual_sparsity"])
            self.visual_n += 1
        if record.get("prefill_s") is not None:
            self.prefill_sum += float(record["prefill_s"])
            self.prefill_n += 1
        if record.get("answer_prob") is not None:
            self.answer_prob_sum += float(record["answer_prob"])
            self.answer_prob_n += 1

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def answer_prob(self) -> float | None:
        """Mean over answered questions of the right option's share of the letters' probability (records
        without it, from before it was recorded, are left out)."""
        return self.answer_prob_sum / self.answer_prob_n if self.answer_prob_n else None

    @property
    def sparsity(self) -> float | None:
        return self.sparsity_sum / self.sparsity_n if self.sparsity_n else None

    @property
    def visual_sparsity(self) -> float | None:
        return self.visual_sum / self.visual_n if self.visual_n else None

    @property
    def prefill_s(self) -> float | None:
        return self.prefill_sum / self.prefill_n if self.prefill_n else None


@dataclass
class Summary:
    """Everything a leaderboard row needs from the records of one run."""

    overall: Tally
    by_duration: dict[str, Tally]
    by_task_type: dict[str, Tally]
    by_task_type_duration: dict[tuple[str, str], Tally]
    peak_mem_gib: float | None = None
    devices: list[str] = field(default_factory=list)
    #: smallest and largest frame count, and pixels per frame, of the answered questions (None: none answered)
    frames_used: tuple[int, int] | None = None
    frame_pixels_used: tuple[int, int] | None = None

    def accuracy(self, duration: str | None = None) -> float | None:
        """Accuracy over one duration split, or over all questions when ``duration`` is None."""
        tally = self.overall if duration is None else self.by_duration.get(duration, Tally())
        return tally.accuracy


def summarize(records: Iterable[dict]) -> Summary:
    """Fold records (any order) into a :class:`Summary`."""
    overall = Tally()
    by_duration = {d: Tally() for d in DURATIONS}
    by_task = defaultdict(Tally)
    by_task_duration = defaultdict(Tally)
    peak = None
    devices: list[str] = []
    frames: list[int] = []
    pixels: list[int] = []
    for record in records:
        duration = str(record.get("duration", ""))
        task = str(record.get("task_type", ""))
        overall.add(record)
        by_duration.setdefault(duration, Tally()).add(record)
        by_task[task].add(record)
        by_task_duration[(task, duration)].add(record)
        if record.get("peak_mem_gib") is not None:
            peak = max(peak or 0.0, float(record["peak_mem_gib"]))
        device = record.get("device")
        if device and device not in devices:
            devices.append(device)
        if not record.get("error") and record.get("frames") is not None:
            frames.append(int(record["frames"]))
            if record.get("frame_size"):
                pixels.append(int(record["frame_size"][0]) * int(record["frame_size"][1]))
    return Summary(
        overall=overall,
        by_duration=by_duration,
        by_task_type=dict(sorted(by_task.items())),
        by_task_type_duration=dict(by_task_duration),
        peak_mem_gib=peak,
        devices=devices,
        frames_used=(min(frames), max(frames)) if frames else None,
        frame_pixels_used=(min(pixels), max(pixels)) if pixels else None,
    )
