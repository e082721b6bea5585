"""A Video-MME-shaped dataset built on the fly: the published parquet columns and small generated videos.

Layout as distributed: ``<root>/videomme/test-00000-of-00001.parquet`` and ``<root>/data/<videoID>.mp4``, so
``python -m vlmsparse.eval --data-dir <root>`` reads it like the real one. Videos are written with PyAV (mpeg4)
and read back by decord like the real ones. The questions are about the generated clips, but their answers are
assigned in turn (A, B, C, D, ...), not derived from the pictures: the dataset exercises the harness, it does
not measure a model. Used by ``python -m vlmsparse.eval --demo`` and by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .videomme import COLUMNS, DURATIONS

__all__ = ["SyntheticVideoMME", "write_synthetic_videomme", "write_video"]

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
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    rows: list[dict] = []
    videos: dict[str, Path] = {}
    index = 0
    for d, duration in enumerate(DURATIONS):
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
                    {
                        "video_id": video_id,
                        "duration": duration,
                        "domain": DOMAINS[d % len(DOMAINS)],
                        "sub_category": SUB_CATEGORIES[d % len(SUB_CATEGORIES)],
                        "url": f"https://www.youtube.com/watch?v={video_file_id}",
                        "videoID": video_file_id,
                        "question_id": f"{video_id}-{k + 1}",
                        "task_type": TASK_TYPES[n % len(TASK_TYPES)],
                        "question": f"Which way does the square move in clip {video_id} (question {k + 1})?",
                        "options": [
                            "A. Left to right.",
                            "B. Right to left.",
                            "C. It does not move.",
                            "D. Top to bottom.",
                        ],
                        "answer": "ABCD"[n % 4],
                    }
                )
    parquet = root / "videomme" / "test-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.list_(pa.string()) if c == "options" else pa.string()) for c in COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), parquet)
    return SyntheticVideoMME(root=root, parquet=parquet, rows=rows, videos=videos)
