"""Cross-process locks in a run folder, so that several processes may work on one run at once.

- :func:`exclusive`: a lock file held for a short read-modify-write (appending a record, merging the files).
- :class:`VideoClaims`: one lock per video, held while a process answers that video's questions; another
  process skips a claimed video and comes back to it at the end. A lock dies with its process (``kill -9``
  included), so a claim never outlives the process that made it.

Both are POSIX ``fcntl`` locks (``flock`` for the file, ``lockf`` byte ranges for the claims); where ``fcntl``
is missing (Windows) nothing is locked and one process per run folder is the rule.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if absent) for the duration of the block."""
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class VideoClaims:
    """Per-video claims of one run: byte ``crc32(video id)`` of ``path`` locked while the video is answered.

    Two videos whose ids share a crc32 only serialise each other. Claims are per process (POSIX record locks):
    within one process they never conflict, so use one ``VideoClaims`` per run and process.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666) if fcntl is not None else None
        self._held: set[str] = set()

    @staticmethod
    def _offset(key: str) -> int:
        return zlib.crc32(key.encode("utf-8"))

    def try_claim(self, key: str) -> bool:
        """Claim ``key`` unless another process holds it; True when claimed."""
        if self._fd is not None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset(key))
            except (BlockingIOError, PermissionError):
                return False
        self._held.add(key)
        return True

    def claim(self, key: str) -> None:
        """Claim ``key``, waiting for the process that holds it to finish with it (or to die)."""
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, self._offset(key))
        self._held.add(key)

    def release(self, key: str) -> None:
        """Give ``key`` back (no-op when not held)."""
        if key not in self._held:
            return
        self._held.discard(key)
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._offset(key))

    def close(self) -> None:
        """Release every claim."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._held.clear()

    def __enter__(self) -> "VideoClaims":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
