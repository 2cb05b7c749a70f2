"""Unpack an uploaded zip (or check an uploaded folder) the way a shared server must: nothing lands outside
the folder it is unpacked into, no links, and no more bytes than an upload may hold -- packed or unpacked."""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tuning.data.files import MAX_UPLOAD_MB_ENV, MB, UploadLimits
from tuning.errors import KanteleError


class ArchiveError(KanteleError, ValueError):
    """An upload that can't be unpacked safely; the message names the entry and the fix."""


def too_big(name: str, size: int, limits: UploadLimits, hint: str) -> ArchiveError:
    """The over-the-limit refusal: the size, the limit, and the two ways out."""
    return ArchiveError(f"{name}: {size / MB:,.1f} MB, over the upload limit of {limits.max_bytes / MB:,.1f} MB -- "
                        f"{hint}, or ask whoever runs the app to raise {MAX_UPLOAD_MB_ENV}")


def skipped(name: str, skip_folders: tuple[str, ...]) -> bool:
    """True for a relative path inside one of the folders an unpack leaves out."""
    return any(part in skip_folders for part in PurePosixPath(name).parts)


def unpack_zip(archive: Path, into: Path, limits: UploadLimits, skip_folders: tuple[str, ...] = (),
               hint: str = "make it smaller") -> Path:
    """Extract a zip's entries (less those in skip_folders) into `into`, refusing any that would land outside it."""
    size = archive.stat().st_size
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise too_big(archive.name, size, limits, hint)
    try:
        with zipfile.ZipFile(archive) as opened:
            entries = opened.infolist()
            for entry in entries:
                _check_entry(entry, archive.name)
            wanted = [e for e in entries if not e.is_dir() and not skipped(_entry_name(e), skip_folders)]
            unpacked = sum(e.file_size for e in wanted)  # zipfile never yields more than an entry declares
            if limits.max_bytes is not None and unpacked > limits.max_bytes:
                raise too_big(f"{archive.name} (unpacked)", unpacked, limits, hint)
            for entry in wanted:
                _extract(opened, entry, into, archive.name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"{archive.name}: not a readable zip ({exc}) -- zip the folder again and upload "
                           "that .zip") from None
    return into


def check_folder(folder: Path, limits: UploadLimits, skip_folders: tuple[str, ...] = (),
                 hint: str = "make it smaller") -> Path:
    """A folder given instead of a zip: no links in it, and no bigger than an upload may be."""
    if not folder.is_dir():
        raise ArchiveError(f"{folder}: no such file or folder -- give a .zip or a folder")
    total = 0
    for path in folder.rglob("*"):
        if skipped(path.relative_to(folder).as_posix(), skip_folders):
            continue
        if path.is_symlink():
            raise ArchiveError(f"{path}: a symbolic link -- copy the real file in its place")
        total += path.stat().st_size if path.is_file() else 0
    if limits.max_bytes is not None and total > limits.max_bytes:
        raise too_big(folder.name, total, limits, hint)
    return folder


def _entry_name(entry: zipfile.ZipInfo) -> str:
    return entry.filename.replace("\\", "/")  # zips made on Windows may separate with backslashes


def _check_entry(entry: zipfile.ZipInfo, archive: str) -> None:
    """Refuse an entry that is absolute, climbs out with '..', or is a link (it could point anywhere)."""
    name = _entry_name(entry)
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        raise ArchiveError(f"{archive}: entry '{name}' points outside the folder (an absolute path or '..') -- "
                           "zip the folder again from inside its parent, with relative paths")
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise ArchiveError(f"{archive}: entry '{name}' is a symbolic link -- zip the real files instead")


def _extract(opened: zipfile.ZipFile, entry: zipfile.ZipInfo, into: Path, archive: str) -> None:
    name = _entry_name(entry)
    target = into.joinpath(*PurePosixPath(name).parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with opened.open(entry) as packed, open(target, "wb") as out:
            shutil.copyfileobj(packed, out)
    except (NotImplementedError, RuntimeError) as exc:  # an unknown compression method; a password
        raise ArchiveError(f"{archive}: entry '{name}' can't be unpacked ({exc}) -- zip it again with standard "
                           "compression and no password") from None
    except OSError as exc:  # e.g. a file and a folder of the same name
        raise ArchiveError(f"{archive}: entry '{name}' can't be unpacked ({exc.strerror or exc}) -- zip the "
                           "folder again") from None
