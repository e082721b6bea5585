"""Video-MME-shaped datasets built on the fly: the published parquet columns and small generated videos.

Layout as distributed: ``<root>/videomme/test-00000-of-00001.parquet`` and ``<root>/data/<videoID>.mp4``, so
``python -m vlmsparse.eval --data-dir <root>`` reads it like the real one; the videos are written with PyAV and
read back by decord like the real ones. Two kinds:

- :func:`write_synthetic_videomme`: a square sweeping over noise, with questions whose answers are assigned in
  turn (A, B, C, D, ...), not derived from the pictures: it exercises the harness, it does not measure a model
  (the tests use it);
- :func:`write_needle_videomme`: each question's clip is a video needle in a haystack (:mod:`.needle`) and the
  question asks about the needle, so the answer is in the clip. The clips are stored losslessly (H.264 in RGB),
  so the harness reads back exactly the frames the needle benchmark renders, and a model trained on that task
  (the testbed) answers from what it sees. ``python -m vlmsparse.eval --demo`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .videomme import COLUMNS, DURATIONS

if TYPE_CHECKING:
    from .needle import NeedleConfig

__all__ = ["SyntheticVideoMME", "write_synthetic_videomme", "write_video", "write_needle_videomme", "write_frames"]

TASK_TYPES = ("Object Recognition", "Counting Problem", "Temporal Reasoning", "Action Recognition")
DOMAINS = ("Knowledge", "Film & Television", "Sports Competition")
SUB_CATEGORIES = ("Humanity & History", "Animation", "Basketball")


def write_video(path: str | Path, *, num_frames: int = 12, height: int = 56, width: int = 84, fps: int = 4, seed: int = 0) -> Path:
    """A small mp4 (mpeg4, yuv420p): a bright square sweeping over a noisy background."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    side = min(height, width) // 3
    for t in range(num_frames):
        frame = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
        x = int((width - side) * t / max(1, num_frames - 1))
        frame[(height - side) // 2 : (height + side) // 2, x : x + side] = (230, 60 + 10 * seed % 150, 40)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_frames(path: str | Path, frames: np.ndarray, *, fps: float) -> Path:
    """An mp4 of uint8 ``frames [T, H, W, 3]`` at ``fps``, lossless (H.264 in RGB, every frame decodes to the
    same pixels); with an FFmpeg build without libx264, MPEG-4 at its finest quantiser (near, not exactly, the
    same pixels)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264rgb", rate=rate, options={"qp": "0", "preset": "ultrafast"})
            stream.pix_fmt = "rgb24"
        except (av.error.FFmpegError, ValueError):  # no libx264 in this FFmpeg
            stream = container.add_stream("mpeg4", rate=rate, options={"qscale": "1"})
            stream.pix_fmt = "yuv420p"
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass
class SyntheticVideoMME:
    """Where a generated dataset lives and what it holds (``rows``: the question table, as dicts)."""

    root: Path
    parquet: Path
    rows: list[dict]
    videos: dict[str, Path] = field(default_factory=dict)

    def questions(self, duration: str | None = None) -> list[dict]:
        """The question rows, all or those of one duration."""
        return [r for r in self.rows if duration is None or r["duration"] == duration]

    def corrupt(self, video_file_id: str) -> None:
        """Replace a video by bytes that no decoder reads."""
        self.videos[video_file_id].write_bytes(b"\x00\x01not a video at all" * 64)

    def remove(self, video_file_id: str) -> None:
        """Delete a video file (its questions stay in the table)."""
        self.videos[video_file_id].unlink()


def write_synthetic_videomme(
    root: str | Path,
    *,
    videos_per_split: int = 1,
    questions_per_video: int = 2,
    num_frames: int = 12,
    height: int = 56,
    width: int = 84,
) -> SyntheticVideoMME:
    """Write the question table and the videos under ``root``; returns what was written.

    Each duration split gets ``videos_per_split`` clips of ``num_frames`` frames of ``height`` x ``width``
    pixels, each with ``questions_per_video`` questions.
    """
    for name, value in (("videos_per_split", videos_per_split), ("questions_per_video", questions_per_video),
                        ("num_frames", num_frames), ("height", height), ("width", width)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    root = Path(root)
    rows: list[dict] = []
    videos: dict[str, Path] = {}
    index = 0
    for duration in DURATIONS:
        for v in range(videos_per_split):
            index += 1
            video_id = f"{index:03d}"
            video_file_id = f"yt{index:02d}Xq_{duration[:2]}"  # YouTube-like ids name the files
            videos[video_file_id] = write_video(
                root / "data" / f"{video_file_id}.mp4", num_frames=num_frames, height=height, width=width, seed=index
            )
            for k in range(questions_per_video):
                n = len(rows)
                rows.append(
                    _row(duration, video_id, video_file_id, k + 1, TASK_TYPES[n % len(TASK_TYPES)],
                         f"Which way does the square move in clip {video_id} (question {k + 1})?",
                         ["A. Left to right.", "B. Right to left.", "C. It does not move.", "D. Top to bottom."],
                         "ABCD"[n % 4])
                )
    return SyntheticVideoMME(root=root, parquet=_write_table(root, rows), rows=rows, videos=videos)


def _row(duration: str, video_id: str, video_file_id: str, number: int, task_type: str, question: str,
         options: list[str], answer: str) -> dict:
    """One question row in the published columns (domain and sub-category by duration, a YouTube-like url)."""
    d = DURATIONS.index(duration)
    return {
        "video_id": video_id,
        "duration": duration,
        "domain": DOMAINS[d % len(DOMAINS)],
        "sub_category": SUB_CATEGORIES[d % len(SUB_CATEGORIES)],
        "url": f"https://www.youtube.com/watch?v={video_file_id}",
        "videoID": video_file_id,
        "question_id": f"{video_id}-{number}",
        "task_type": task_type,
        "question": question,
        "options": options,
        "answer": answer,
    }


def _write_table(root: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = root / "videomme" / "test-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.list_(pa.string()) if c == "options" else pa.string()) for c in COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), parquet)
    return parquet


def write_needle_videomme(
    root: str | Path,
    *,
    lengths: Mapping[str, int],
    questions_per_split: int = 4,
    needle: NeedleConfig | None = None,
    seed: int = 0,
) -> SyntheticVideoMME:
    """Write a Video-MME-shaped dataset of needle questions under ``root``; returns what was written.

    ``lengths`` maps each duration (``short``, ``medium``, ``long``) to the frames of its clips; every split gets
    ``questions_per_split`` clips of one question each, the needle at depths spread evenly over the clip
    (``(i + 0.5) / questions_per_split``). ``needle`` is a :class:`~vlmsparse.eval.needle.NeedleConfig` (default:
    the ``colour`` question on 56-pixel frames, as the shipped testbed was trained). Clips are declared at the
    needle benchmark's 2 frames a second, so Qwen's sampling rules read every frame, as that benchmark feeds
    them. Sample ``i`` of a split is needle sample ``i`` of its cell under ``seed`` (:func:`.needle.make_sample`):
    the same pixels and question as ``--bench vniah --generate`` draws.
    """
    from .needle import VIDEO_FPS, NeedleConfig, make_sample

    needle = needle or NeedleConfig(frame_size=56, needle_frames=2, kind="colour")
    unknown = sorted(set(lengths) - set(DURATIONS))
    if unknown or not lengths:
        raise ValueError(f"lengths must map durations among {DURATIONS} to frame counts, got {dict(lengths)!r}")
    if questions_per_split < 1:
        raise ValueError(f"questions_per_split must be >= 1, got {questions_per_split}")
    for length in lengths.values():
        needle.check_length(length)
    root = Path(root)
    rows: list[dict] = []
    videos: dict[str, Path] = {}
    for duration in (d for d in DURATIONS if d in lengths):
        length = int(lengths[duration])
        for i in range(questions_per_split):
            depth = (i + 0.5) / questions_per_split
            sample = make_sample(seed, length, depth, needle, index=i)
            n = len(rows)
            video_id = f"{n + 1:03d}"
            video_file_id = f"nd{n + 1:02d}Xq_{duration[:2]}"
            videos[video_file_id] = write_frames(root / "data" / f"{video_file_id}.mp4", sample.frames, fps=VIDEO_FPS)
            q = sample.question
            task_type = "Object Recognition" if q.kind != "colour" else "Attribute Perception"
            rows.append(_row(duration, video_id, video_file_id, 1, task_type, q.question,
                             [f"{letter}. {text}" for letter, text in zip("ABCD", q.options)], q.answer))
    return SyntheticVideoMME(root=root, parquet=_write_table(root, rows), rows=rows, videos=videos)
