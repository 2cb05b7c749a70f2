"""Writing files safely: atomically, and telling a full disk apart from any other failure.

Atomic writes: a file or folder is built under a temporary name beside its target, then renamed into place.
A crash, a kill or a full disk mid-write then leaves the old version (or nothing), never half a file
that the app, the trainer or a Hub push would read as if it were whole. A full disk is then reported once, in
one message that says where and the ways out (`disk_full_error`), whichever library's words it came in.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuning.errors import KanteleError, exception_chain

FILE_MODE, DIR_MODE = 0o644, 0o755  # mkstemp/mkdtemp make 0600/0700; what we write is meant to be read


@contextmanager
def staged_file(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; a clean exit renames it over `path`, an error removes it.

    durable=True also flushes it to disk first, so even a power cut leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp)
    try:
        yield temp
        if durable:
            with open(temp, "rb+") as written:
                os.fsync(written.fileno())
        os.chmod(temp, FILE_MODE)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `path` to fill; a clean exit puts it in place of path, an error removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        staging.chmod(DIR_MODE)
        _replace_dir(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put a finished folder in place of target (an old one is moved aside first, then deleted)."""
    # POSIX can't rename a folder over a non-empty one; moving the old one aside keeps the gap to two
    # renames, during which target is missing (never half there).
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)  # left by an earlier crash in the gap
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# safetensors (Rust) and torch.save (C++) report a full disk in their text, not as an OSError errno.
DISK_FULL_WORDS = ("No space left on device", "StorageFull")
# torch.save's zip writer says only this much (C++ stream errors); the free space left tells why.
WRITE_FAILED_WORDS = ("write failed", "unexpected pos", "iostream error")
LOW_SPACE_BYTES = 16 * 2**20  # less free than this after a failed write: the write failed for want of space


class DiskFullError(KanteleError, OSError):
    """The disk filled up while writing; the message says which disk and the ways out."""


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
    for link in exception_chain(exc):
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
