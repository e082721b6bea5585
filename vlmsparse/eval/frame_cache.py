"""Sampled videos stored on disk, so that each video is decoded once for every method, setting and run.

Every method of a comparison samples the same frames from the same file (same path, same
:class:`~vlmsparse.eval.frames.FrameSpec`); decoding a long video costs far more CPU time than reading its sampled
frames back. A :class:`FrameCache` keeps each sampled video in a folder as two files:

- ``<key>.npy``: the frames, uint8 ``[T, H, W, 3]`` (read back whole with ``np.load``);
- ``<key>.json``: every other field of the :class:`~vlmsparse.eval.frames.SampledVideo`, the frames' shape, and
  what the key was made of.

The key hashes the file's resolved path, size and modification time (ns), the spec's ``to_dict()`` and
:data:`FORMAT_VERSION`: a changed file, another spec or another format is another entry (a stale one is never
read). Each file is written to a unique temporary name in the folder and moved into place with ``os.replace``,
the frames first and the JSON last: an entry whose JSON is there is complete, so processes and runs can share
one folder. An entry that cannot be read (cut short, not JSON, frames of another shape than its JSON says) is
a miss, and the next write replaces it. A write that fails (read-only folder, full disk) warns once and the
run goes on without storing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import write_problem
from .frames import FrameSpec, SampledVideo, read_video

__all__ = ["FORMAT_VERSION", "FrameCache", "check_cache_folder"]

#: Raised when the entry layout or the meaning of a sampled video changes: older entries are then misses.
FORMAT_VERSION = 1
_FRAMES_SUFFIX = ".npy"
_META_SUFFIX = ".json"


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_cache_folder(folder: str | Path) -> str | None:
    """Why ``folder`` cannot hold a frame cache (``None`` when it can): it is a file, or it cannot be created or
    written. Creates the folder; the write probe leaves nothing behind."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    reason = write_problem(folder)
    return None if reason is None else f"{folder} cannot be written ({reason})"


class FrameCache:
    """Sampled videos in ``folder``, keyed by the file (path, size, modification time) and the frame spec.

    Thread-safe and safe for several processes on one folder. ``log`` takes the one-line warning given when
    storing fails for the first time (default: standard error).
    """

    def __init__(self, folder: str | Path, *, log: Callable[[str], None] = _stderr_line):
        self.folder = Path(folder)
        self._log = log
        self._lock = threading.Lock()
        self._writable = True
        #: why storing failed (``None`` while it works); after a failure nothing more is stored
        self.write_error: str | None = None
        mask = os.umask(0o022)  # read once, here: new entries get the mode of any file written in the folder
        os.umask(mask)
        self._mode = 0o666 & ~mask

    # -- keys -----------------------------------------------------------------------------------------
    @staticmethod
    def key_fields(path: str | Path, spec: FrameSpec) -> dict:
        """What an entry's key is made of (``OSError`` when the file cannot be looked at)."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        spec_fields = spec.to_dict()
        spec_fields["fps"] = float(spec_fields["fps"])  # fps 2 (a config's integer) and 2.0 sample alike
        return {
            "format": FORMAT_VERSION,
            "path": str(resolved),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "spec": spec_fields,
        }

    @staticmethod
    def key_of(fields: dict) -> str:
        """The entry name of :meth:`key_fields`' result: a hex digest."""
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def key(self, path: str | Path, spec: FrameSpec) -> str:
        """The entry name of ``path`` sampled by ``spec`` (``OSError`` when the file cannot be looked at)."""
        return self.key_of(self.key_fields(path, spec))

    def entry_paths(self, key: str) -> tuple[Path, Path]:
        """``(frames .npy, fields .json)`` of entry ``key``."""
        return self.folder / f"{key}{_FRAMES_SUFFIX}", self.folder / f"{key}{_META_SUFFIX}"

    # -- reading --------------------------------------------------------------------------------------
    def get(self, path: str | Path, spec: FrameSpec, *, mmap: bool = False) -> SampledVideo | None:
        """The stored video of ``path`` sampled by ``spec``, or ``None`` (not stored, stale, unreadable).

        ``mmap``: the frames are mapped read-only instead of read whole (a cheap check that an entry is whole).
        """
        try:
            key = self.key(path, spec)
        except OSError:
            return None
        return self._load(key, str(path), mmap=mmap)

    def _load(self, key: str, path: str, *, mmap: bool = False) -> SampledVideo | None:
        frames_path, meta_path = self.entry_paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
                return None
            frames = np.load(frames_path, mmap_mode="r" if mmap else None, allow_pickle=False)
            if frames.dtype != np.uint8 or list(frames.shape) != meta["shape"] or frames.ndim != 4:
                return None
            return SampledVideo(
                frames=frames,
                sample_fps=float(meta["sample_fps"]),
                indices=[int(i) for i in meta["indices"]],
                total_frames=int(meta["total_frames"]),
                video_fps=float(meta["video_fps"]),
                source_size=tuple(int(s) for s in meta["source_size"]),
                path=path,
                decoder=str(meta["decoder"]),
                extra=dict(meta.get("extra") or {}),
            )
        except Exception:  # noqa: BLE001 - absent, cut short, not JSON, not an array, a field missing or wrong: a miss
            return None

    # -- writing --------------------------------------------------------------------------------------
    def put(self, path: str | Path, spec: FrameSpec, video: SampledVideo) -> bool:
        """Store ``video`` as ``path`` sampled by ``spec``. Returns whether it was stored; a failed write warns
        once, and later calls store nothing."""
        try:
            fields = self.key_fields(path, spec)
        except OSError:
            return False  # the file is gone: nothing to key the entry on
        return self._store(fields, video)

    def _store(self, fields: dict, video: SampledVideo) -> bool:
        if not self._writable:
            return False
        frames = np.ascontiguousarray(video.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        meta = {
            **fields,
            "shape": list(frames.shape),
            "sample_fps": float(video.sample_fps),
            "indices": [int(i) for i in video.indices],
            "total_frames": int(video.total_frames),
            "video_fps": float(video.video_fps),
            "source_size": [int(s) for s in video.source_size],
            "decoder": video.decoder,
            "extra": video.extra,
        }
        try:
            text = json.dumps(meta, sort_keys=True) + "\n"
        except (TypeError, ValueError):
            return False  # ``extra`` holds something JSON cannot: the video stays uncached
        frames_path, meta_path = self.entry_paths(self.key_of(fields))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_atomic(frames_path, lambda fh: np.save(fh, frames, allow_pickle=False))
            self._write_atomic(meta_path, lambda fh: fh.write(text.encode("utf-8")))
        except OSError as exc:
            self._give_up(exc)
            return False
        return True

    def _write_atomic(self, target: Path, write: Callable) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.folder)
        try:
            os.fchmod(fd, self._mode)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _give_up(self, exc: OSError) -> None:
        with self._lock:
            if not self._writable:
                return
            self._writable = False
            self.write_error = exc.strerror or str(exc)
        self._log(f"frame cache: cannot write to {self.folder} ({self.write_error}); going on without storing frames")

    # -- both -----------------------------------------------------------------------------------------
    def read(self, path: str | Path, spec: FrameSpec, *, mmap: bool = False) -> tuple[SampledVideo, bool]:
        """``(video, cached)``: the stored video when there is one, else :func:`~vlmsparse.eval.frames.read_video`
        (whose :class:`~vlmsparse.eval.frames.VideoDecodeError` passes through), stored for next time.
        ``mmap``: a stored video's frames are mapped, not read (as in :meth:`get`)."""
        try:
            fields = self.key_fields(path, spec)  # before decoding: a file changed meanwhile keeps its old identity
        except OSError:
            return read_video(path, spec), False  # no file to key on: read_video says what is wrong
        video = self._load(self.key_of(fields), str(path), mmap=mmap)
        if video is not None:
            return video, True
        video = read_video(path, spec)
        self._store(fields, video)
        return video, False
