"""Errors a user can fix: the command line prints their message on one line and exits with status 2.

Each message names the bad thing (a flag, a file, a folder) and says what to do. Anything else that goes
wrong is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class HarnessError(RuntimeError):
    """A problem with the user's input or environment, fixable without changing the code."""


class DataError(HarnessError):
    """The question table or the data folder cannot be used."""


class MissingVideosError(DataError):
    """Some questions' video files are not under ``<data-dir>/data``."""


class ModelError(HarnessError):
    """The model folder or hub id cannot be loaded."""


class OutputError(HarnessError):
    """The results folder cannot be written (read-only, full, not a folder)."""


def output_error(action: str, path, exc: OSError) -> OutputError:
    """An :class:`OutputError` for an ``OSError`` met while ``action`` (e.g. ``"writing"``) ``path``."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space (or pass --out on another disk) and rerun the same command"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "pass --out a folder you can write to"
    else:
        hint = "check the folder, or pass --out another one"
    return OutputError(f"{action} {path} failed: {reason}; every answer recorded before is kept; {hint}")


def write_problem(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (created if needed): the system's reason, or None when they can.
    The probe file it writes is removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
