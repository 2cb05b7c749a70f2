"""Turning a library's exception into the short text our one-line error messages quote."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

MAX_QUOTED_CHARS = 300  # a server may answer with a whole HTML page; one line of it is enough


def first_line(exc: BaseException) -> str:
    """The exception's first non-empty line, cut to MAX_QUOTED_CHARS."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:MAX_QUOTED_CHARS]


# safetensors (Rust) and torch.save (C++) report a full disk in their text, not as an OSError errno.
DISK_FULL_WORDS = ("No space left on device", "StorageFull")
# torch.save's zip writer says only this much (C++ stream errors); the free space left tells why.
WRITE_FAILED_WORDS = ("write failed", "unexpected pos", "iostream error")
LOW_SPACE_BYTES = 16 * 2**20  # less free than this after a failed write: the write failed for want of space


class DiskFullError(OSError):
    """The disk filled up while writing; the message says which disk and the ways out."""


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free space on the disk holding folder (or its nearest existing parent); None when unknown."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """True when exc (or what it was raised from) is 'no space left on device' -- the one place that tells."""
    for link in _chain(exc):
        text = str(link)
        if getattr(link, "errno", None) == errno.ENOSPC or any(word in text for word in DISK_FULL_WORDS):
            return True
        if folder is not None and any(word in text for word in WRITE_FAILED_WORDS):
            free = free_bytes(folder)
            if free is not None and free < LOW_SPACE_BYTES:
                return True
    return False


def disk_full_error(folder: str | os.PathLike) -> DiskFullError:
    """The one message for a full disk: where, how much is left, and what to do about it."""
    free = free_bytes(folder)
    left = f"{free / 2**20:.0f} MB free" if free is not None else "free space unknown"
    error = DiskFullError(
        f"disk full: no space left on the disk holding {folder} ({left}) -- free some space (delete old runs), "
        "save checkpoints less often (raise training.save_steps, lower training.save_total_limit), or put the "
        "runs on a bigger disk (KANTELE_HOME for the app, --output for the CLI); then resume or start again"
    )
    error.errno = errno.ENOSPC  # set after: OSError(errno, text) would print "[Errno 28]" before the message
    return error
