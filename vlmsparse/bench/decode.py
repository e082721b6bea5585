"""How fast the harness's CPU side decodes and samples a video with decord (no GPU needed).

The harness decodes the next video on a worker thread while the GPU answers the current one's questions, so
the CPU keeps up when one video's decode time is below the GPU time of its questions. This times
:func:`vlmsparse.eval.frames.read_video` (decord, Qwen2.5-VL's sampling: 2 fps, at most 768 frames, resized to
the 24,576-token budget) on the given files, or on a synthetic H.264 clip it writes first (PyAV; OpenCV's MPEG-4
where PyAV is missing), and prints sampled frames, seconds and frames per second.

With ``--frame-cache DIR`` each sampled video is also stored in the harness's frame cache
(:mod:`vlmsparse.eval.frame_cache`) and read back: ``cached_read_s`` is the median time of that read (a cache hit),
beside ``decode_s``. The entry has just been written, so the read is usually served from the operating system's
page cache; a cold read from disk is slower.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import time
from pathlib import Path

import numpy as np

from vlmsparse.argtypes import video_size
from vlmsparse.runs import new_run_folder

from .common import RESULTS_DIR, RunTable, SavedRows, add_output_arguments, print_table, write_csv

#: Shown under ``--help``; each runs on a CPU.
EXAMPLES = """\
examples:
  python -m vlmsparse.bench decode                                  # a synthetic 2-minute 720p clip, written first
  python -m vlmsparse.bench decode --seconds 20 --repeats 1 --parallel 1 2 --out runs/decode-small
  python -m vlmsparse.bench decode --seconds 60 --frame-cache runs/frame-cache   # also times a cache hit
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    p.add_argument("--video", nargs="*", default=[], help="video files to decode (default: a synthetic clip)")
    p.add_argument("--seconds", type=float, default=120.0, help="length of the synthetic clip (default 120)")
    p.add_argument("--size", type=video_size, default=(1280, 720), metavar="WIDTHxHEIGHT",
                   help="frame size of the synthetic clip, even sides >= 16 (default 1280x720)")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the synthetic clip (default 30)")
    p.add_argument("--repeats", type=int, default=3, help="timed decodes per video and worker count (default 3)")
    p.add_argument("--parallel", type=int, nargs="+", default=[1],
                   help="videos decoded at once (threads, one reader each): the aggregate rate of several workers "
                   "(default 1)")
    p.add_argument("--frame-cache", metavar="DIR", default=None,
                   help="also store each sampled video in this frame cache folder and time reading it back "
                   "(column cached_read_s; default: no cache)")
    add_output_arguments(p, "decode")


def check_args(args: argparse.Namespace) -> None:
    """A --frame-cache that is a file or cannot be written is an argument error."""
    from vlmsparse.eval.frame_cache import check_cache_folder

    if args.frame_cache:
        problem = check_cache_folder(args.frame_cache)
        if problem:
            raise ValueError(f"--frame-cache {problem}; pass a folder you can write to")


def _frames(n: int, width: int, height: int, seed: int = 0):
    """Smooth gradients with fine texture, panning, and a moving square: compresses like footage, not like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.normal(0, 12, size=(height, width, 1)).astype(np.float32)
    base = np.stack([127 + 90 * np.sin(xx / (60 + 20 * c) + yy / 90 + c) for c in range(3)], -1) + texture
    base = np.clip(base, 0, 255).astype(np.uint8)
    side = height // 4
    for t in range(n):
        frame = np.roll(base, 3 * t, axis=1)
        x = int((width - side) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 90.0)))
        frame[height // 3 : height // 3 + side, x : x + side] = (230, 40, 40)
        yield frame


def write_synthetic_video(
    path: str | Path, seconds: float, width: int, height: int, fps: int, bit_rate: int = 2_000_000
) -> tuple[Path, str]:
    """Write a synthetic clip; returns its path and codec (H.264 at ``bit_rate`` through PyAV, else OpenCV MPEG-4)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, int(round(seconds * fps)))
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.bit_rate = bit_rate  # about what 720p30 footage gets on video sites
            for frame in _frames(n, width, height):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        return path, "h264"
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in _frames(n, width, height):
        writer.write(frame[..., ::-1])
    writer.release()
    return path, "mpeg4"


def decode_rows(
    paths: list[tuple[Path, str]], repeats: int, parallel: list[int], frame_cache: str | Path | None = None,
    rows: list | None = None,
) -> list[dict]:
    """Time ``read_video`` with the harness's default frame spec on each file, ``k`` copies at once for each k;
    with ``frame_cache`` (a folder), also the median time of reading each sampled video back from the cache.
    ``rows``: the list the rows are appended to (a :class:`~vlmsparse.bench.common.SavedRows` saves each)."""
    from concurrent.futures import ThreadPoolExecutor

    from vlmsparse.eval.frames import FrameSpec, decord_reader, read_video

    spec = FrameSpec()
    rows = [] if rows is None else rows
    for path, codec in paths:
        with decord_reader(str(path)) as reader:  # first open (library load, file cache) kept out of the numbers
            reader[0]
        first = len(rows)
        for k in parallel:
            times = []
            with ThreadPoolExecutor(max_workers=k) as pool:
                for _ in range(repeats):
                    start = time.perf_counter()
                    videos = list(pool.map(lambda _: read_video(path, spec), range(k)))
                    times.append(time.perf_counter() - start)
            video, seconds = videos[0], statistics.median(times)
            source_s = video.total_frames / video.video_fps if video.video_fps else None
            rows.append(
                dict(
                    date=_dt.date.today().isoformat(),
                    cpus=os.cpu_count(),
                    video=path.name,
                    codec=codec,
                    source_frames=video.total_frames,
                    source_size="x".join(map(str, video.source_size[::-1])),
                    video_fps=round(video.video_fps, 3),
                    sampled_frames=video.num_frames,
                    sampled_size="x".join(map(str, video.size[::-1])),
                    parallel=k,
                    decode_s=seconds,
                    videos_per_s=k / seconds,
                    sampled_frames_per_s=k * video.num_frames / seconds,
                    source_seconds_per_s=k * source_s / seconds if source_s else None,
                )
            )
        if frame_cache is not None:
            read_s = cached_read_seconds(frame_cache, path, spec, video, repeats)
            for row in rows[first:]:
                row["cached_read_s"] = read_s
    return rows


def cached_read_seconds(folder: str | Path, path: Path, spec, video, repeats: int) -> float:
    """Store ``video`` (``path`` sampled by ``spec``) in the frame cache at ``folder`` and return the median
    seconds of ``repeats`` reads of it (each checked against ``video``)."""
    from vlmsparse.eval.frame_cache import FrameCache

    cache = FrameCache(folder)
    if not cache.put(path, spec, video):
        raise SystemExit(f"cannot store {path.name} in the frame cache {folder} ({cache.write_error})")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        hit = cache.get(path, spec)
        times.append(time.perf_counter() - start)
        if hit is None or not np.array_equal(hit.frames, video.frames):
            raise SystemExit(f"the frame cache {folder} did not give back the frames of {path.name}")
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    try:
        import decord  # noqa: F401
    except ImportError:
        raise SystemExit("the decode benchmark needs decord (pip install decord)") from None
    if args.repeats < 1 or min(args.parallel) < 1:
        raise SystemExit("--repeats and --parallel must be >= 1")
    paths = []
    for name in args.video:
        if not Path(name).is_file():
            raise SystemExit(f"no video file at {name}")
        paths.append((Path(name), "file"))
    out = Path(args.out) if args.out else new_run_folder("decode")  # after the checks: no empty folder on an error
    if not paths:
        width, height = args.size
        start = time.perf_counter()
        paths.append(write_synthetic_video(out / "synthetic.mp4", args.seconds, width, height, args.fps))
        print(f"wrote {paths[0][0]} ({paths[0][1]}) in {time.perf_counter() - start:.1f} s")
    rows = decode_rows(paths, args.repeats, args.parallel, args.frame_cache,
                       rows=SavedRows(RunTable(out / "decode.csv")))  # each row saved as it is measured
    cached = ["cached_read_s"] if args.frame_cache else []
    print_table(rows, ["video", "codec", "source_frames", "source_size", "sampled_frames", "sampled_size", "parallel",
                       "decode_s", *cached, "videos_per_s", "sampled_frames_per_s", "source_seconds_per_s", "cpus"])
    print(f"wrote {rows.table.save(rows)}")  # again: the frame cache's column is added to finished rows
    if args.results:
        print(f"appended to {write_csv(RESULTS_DIR / 'decode.csv', rows)}")
    return 0
