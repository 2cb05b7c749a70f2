"""Atomic writes: a file or folder is built under a temporary name beside its target, then renamed into place.

A crash, a kill or a full disk mid-write then leaves the old version (or nothing), never half a file
that the app, the trainer or a Hub push would read as if it were whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
