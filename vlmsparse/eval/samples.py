"""Model inputs of a benchmark, one prompt at a time, for work that runs the model without scoring it
(calibration profiles attention on them).

A benchmark that can give such samples sets ``samples=`` in its registry entry: a function of the harness
options (:class:`vlmsparse.eval.runner.EvalOptions`: data folder, split, frame sampling, ...) returning a list
of :class:`PromptSample`, each decoding its video only when loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .frames import SampledVideo

__all__ = ["PromptSample", "videomme_samples"]


@dataclass(frozen=True)
class PromptSample:
    """One prompt about one video; ``load()`` decodes the video: ``(SampledVideo, prompt text)``."""

    sample_id: str
    load: Callable[[], tuple[SampledVideo, str]]


def videomme_samples(opts) -> list[PromptSample]:
    """Video-MME questions of ``opts.split`` whose videos are present, one per video first (then the next
    question of each video, and so on), so that consecutive samples differ in their video."""
    from .frames import read_video
    from .prompts import build_prompt
    from .runner import select_questions
    from .settings import frame_spec
    from .videomme import load_questions, locate_videos

    if opts.data_dir is None:
        raise ValueError("--data-dir is required: the folder holding Video-MME's data/<videoID>.mp4 files")
    questions, _ = load_questions(opts.data_dir, opts.metadata)
    chosen = select_questions(questions, opts.split, None)
    videos, _missing = locate_videos(opts.data_dir, chosen)
    spec = frame_spec({}, {k: getattr(opts, k) for k in ("frames", "fps", "min_pixels", "max_pixels", "total_pixels")})
    by_video: dict[str, list] = {}
    for q in chosen:
        if q.video_file_id in videos:
            by_video.setdefault(q.video_file_id, []).append(q)
    ordered = []
    depth = 0
    while any(len(qs) > depth for qs in by_video.values()):
        ordered += [qs[depth] for qs in by_video.values() if len(qs) > depth]
        depth += 1

    def loader(q) -> Callable[[], tuple[SampledVideo, str]]:
        return lambda: (read_video(videos[q.video_file_id], spec), build_prompt(q.question, q.options))

    return [PromptSample(q.question_id, loader(q)) for q in ordered]
