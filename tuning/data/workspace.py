"""A visitor's working dataset: their uploads kept as given, the cleaned split beside them.

The app gives each browser session its own folder (named by a random id, never by user
text), so visitors of a shared Space never see each other's data. What one load may bring in is
checked here, cheapest first: bytes (no file read), then rows (counted, not parsed into examples),
before the costly part (checking, deduplicating and tokenizing every row).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tuning.atomic import staged_file
from tuning.data.examples import LoadedData, load_examples, read_jsonl, split_examples, write_jsonl
from tuning.data.files import (
    DataError,
    UploadLimits,
    check_rows,
    check_size,
    count_rows,
    format_size,
    one_line,
    upload_limits,
)
from tuning.guards.caps import CAP_ENV_PREFIX
from tuning.qa.sources import PASTED_FILE, PASTED_SOURCE

UPLOADS_DIR = "uploads"  # originals, untouched
DOCUMENTS_DIR = "documents"  # the documents QA pairs were generated from: retrieval searches them
MAX_NAME_BYTES = 200  # a kept document's name, before any number: room for one under the usual 255-byte limit
GENERATED_DIR = "generated"
REVIEW_FILE = "review.jsonl"  # generated pairs awaiting review, saved after every batch
ACCEPTED_FILE = "accepted.jsonl"  # reviewed pairs that joined the working dataset
CLEAN_TRAIN = "train.jsonl"
CLEAN_VALIDATION = "validation.jsonl"
KALEVALA_DIR = Path(__file__).resolve().parents[2] / "datasets" / "kalevala"


@dataclass
class PreparedData:
    """The cleaned dataset of a workspace and how it was made."""

    train_file: Path
    validation_file: Path
    loaded: LoadedData
    train_count: int
    validation_count: int


def new_workspace(root: str | Path) -> Path:
    """A fresh private folder under root (on a shared app, workspaces left idle past their time go first)."""
    from tuning.guards.caps import caps

    hours = caps().workspace_hours
    if hours is not None:
        sweep_idle_workspaces(root, hours * 3600)
    folder = Path(root) / uuid.uuid4().hex
    (folder / UPLOADS_DIR).mkdir(parents=True)
    return folder


def sweep_idle_workspaces(root: str | Path, idle_s: float, now: float | None = None) -> list[Path]:
    """Delete the workspaces under root that nothing has written to for idle_s seconds; returns them.
    A reload starts a new workspace, so without this a shared disk fills with abandoned ones."""
    now = time.time() if now is None else now
    removed = []
    for folder in Path(root).iterdir() if Path(root).is_dir() else []:
        if folder.is_dir() and now - _last_write(folder) > idle_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _last_write(folder: Path) -> float:
    """The newest modification time in a folder (the folder's own included)."""
    times = [folder.stat().st_mtime]
    for path in folder.rglob("*"):
        try:
            times.append(path.stat().st_mtime)
        except OSError:  # removed meanwhile
            pass
    return max(times)


def keep_uploads(workspace: Path, files: list[str | Path], limits: UploadLimits | None = None) -> list[Path]:
    """Copy uploads into the workspace as they are (name kept, path not trusted); DataError, and nothing
    copied, if a file, the load or the workspace would be over its byte limit."""
    limits = limits or upload_limits()
    sources = [Path(source) for source in files]
    targets = [workspace / UPLOADS_DIR / f"{number:02d}-{Path(source.name).name}"
               for number, source in enumerate(sources, start=1)]
    try:
        for source in sources:
            check_size(source, limits)
        check_request_size(sources, limits)
        check_workspace_size(workspace, sources, targets, limits)
    except FileNotFoundError as error:  # in the app: an upload the server has already cleaned away
        raise _gone(error) from None
    _copy_all(sources, targets)
    return targets


def _gone(error: FileNotFoundError) -> DataError:
    return DataError(f"{one_line(Path(error.filename).name)}: file not found — upload it again")


def _copy_all(sources: list[Path], targets: list[Path]) -> None:
    for source, target in zip(sources, targets, strict=True):
        with staged_file(target) as temp:  # a crash mid-copy leaves no half original to load later
            shutil.copyfile(source, temp)


def keep_documents(workspace: Path, files: list[str | Path], pasted: str = "",
                   limits: UploadLimits | None = None) -> list[Path]:
    """Keep the documents QA pairs are generated from in the workspace's DOCUMENTS_DIR, for retrieval to search:
    each uploaded file under its own name (its path not trusted; a name another content already holds gets a
    number), and non-empty pasted text as PASTED_FILE (or a numbered one). Content kept before is not copied again.
    Returns the kept documents in the order given (uploads, then the pasted text), each once. DataError, and
    nothing copied, if the workspace would be over its byte limit."""
    limits = limits or upload_limits()
    folder = Path(workspace) / DOCUMENTS_DIR
    with tempfile.TemporaryDirectory() as scratch:
        sources = [Path(file) for file in files]
        if pasted.strip():
            sources.append(Path(scratch) / PASTED_FILE)
            sources[-1].write_text(pasted, encoding="utf-8", errors="replace", newline="")
        by_content = {_digest(path): path for path in _kept_documents(folder)}
        taken = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
        kept, copies = [], []  # copies: (source, target) of content not kept before
        try:
            for source in sources:
                digest = _digest(source)
                if digest not in by_content:
                    name = _free_name(safe_document_name(source.name), taken)
                    taken.add(name)
                    by_content[digest] = folder / name
                    copies.append((source, folder / name))
                if by_content[digest] not in kept:
                    kept.append(by_content[digest])
            check_workspace_size(workspace, [s for s, _ in copies], [t for _, t in copies], limits)
        except FileNotFoundError as error:
            raise _gone(error) from None
        _copy_all([s for s, _ in copies], [t for _, t in copies])
    return kept


def safe_document_name(name: str) -> str:
    """A file name to keep a document under: no folder part (of either slash), unprintables as '_', not too long."""
    name = "".join(c if c.isprintable() else "_" for c in re.split(r"[\\/]", name)[-1]).strip()
    if name in ("", ".", ".."):
        return "document"
    suffix = Path(name).suffix
    stem = name.removesuffix(suffix)
    while len((stem + suffix).encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    return stem + suffix


def _free_name(name: str, taken: set[str]) -> str:
    """name, or the first numbered one (02-name, 03-name, …) not taken."""
    number = 2
    candidate = name
    while candidate in taken:
        candidate, number = f"{number:02d}-{name}", number + 1
    return candidate


def _kept_documents(folder: Path) -> list[Path]:
    """The documents kept in folder, not a copy in flight (staged_file's '.name.….tmp')."""
    if not folder.is_dir():
        return []
    return [path for path in sorted(folder.iterdir())
            if path.is_file() and not (path.name.startswith(".") and path.name.endswith(".tmp"))]


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def documents_named(workspace: Path, sources: Iterable[str | None]) -> list[Path]:
    """The workspace's kept documents that generated pairs name as their source (a pair's provenance 'source': an
    upload's name, or PASTED_SOURCE), under that name or a numbered one -- so a name several documents had
    gives them all."""
    names = {PASTED_FILE if source == PASTED_SOURCE else safe_document_name(source) for source in sources if source}
    return [path for path in _kept_documents(Path(workspace) / DOCUMENTS_DIR)
            if path.name in names or re.sub(r"^\d{2,}-", "", path.name) in names]


def merge_documents(*lists: Iterable[str | Path] | None) -> list[str]:
    """The documents of several lists, as strings, in order, each once."""
    merged = []
    for paths in lists:
        for path in paths or []:
            if str(path) not in merged:
                merged.append(str(path))
    return merged


def check_request_size(paths: list[Path], limits: UploadLimits) -> None:
    """DataError when the files of one load are together over the byte limit per load; reads no file."""
    if limits.request_bytes is not None:
        total = sum(path.stat().st_size for path in paths)
        if total > limits.request_bytes:
            raise DataError(
                f"{name_files(paths)}: {format_size(total)} in this load, over the limit of "
                f"{format_size(limits.request_bytes)} per load — load fewer or smaller files at a time, "
                f"or ask whoever runs the app to raise {CAP_ENV_PREFIX}REQUEST_MB"
            )


def check_request_rows(paths: list[Path], limits: UploadLimits) -> None:
    """DataError when a file, or the files of one load together, hold more rows than the limits allow;
    counted before any row is checked, deduplicated or tokenized (the costly part of a load)."""
    if limits.max_rows is None and limits.request_rows is None:
        return
    total = 0
    for path in paths:
        count = count_rows(path)
        check_rows(path.name, count, limits)  # one file over its own limit: that message, not the total's
        total += count
    if limits.request_rows is not None and total > limits.request_rows:
        raise DataError(
            f"{name_files(paths)}: {total:,} rows in this load, over the limit of {limits.request_rows:,} rows "
            f"per load — load fewer or smaller files at a time, or ask whoever runs the app to raise "
            f"{CAP_ENV_PREFIX}REQUEST_ROWS"
        )


def check_workspace_size(workspace: Path, sources: list[Path], targets: list[Path], limits: UploadLimits) -> None:
    """DataError when copying sources to targets would take the workspace folder over its byte limit."""
    if limits.workspace_bytes is None:
        return
    replaced = set(targets)  # a kept copy of the same number and name is overwritten, not added to
    total = _folder_bytes(Path(workspace), replaced) + sum(source.stat().st_size for source in sources)
    if total > limits.workspace_bytes:
        raise DataError(
            f"{name_files(sources)}: your workspace would hold {format_size(total)} with these files, over the "
            f"limit of {format_size(limits.workspace_bytes)} per workspace — load fewer or smaller files, reload "
            f"the page to start a fresh workspace, or ask whoever runs the app to raise {CAP_ENV_PREFIX}WORKSPACE_MB"
        )


def _folder_bytes(folder: Path, leave_out: set[Path]) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path not in leave_out and path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:  # a temp file renamed away by a save in flight
            continue
    return total


def name_files(paths: list[Path], shown: int = 5) -> str:
    """The files' names for a message: the first few, then how many more."""
    names = [one_line(Path(path).name) for path in paths]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def prepare_dataset(workspace: Path, files: list[Path], validation_fraction: float, seed: int,
                    max_tokens: int | None = None, count_tokens=None,
                    validation_files: list[Path] | None = None, limits: UploadLimits | None = None) -> PreparedData:
    """Validate, dedupe and split the files into the workspace's cleaned train/validation JSONL (within limits)."""
    limits = limits or upload_limits()
    check_request_rows([*files, *(validation_files or [])], limits)
    loaded = load_examples(files, max_tokens=max_tokens, count_tokens=count_tokens, limits=limits)
    if validation_files:
        train, validation = loaded.examples, load_examples(validation_files, limits=limits).examples
    else:
        train, validation = split_examples(loaded.examples, validation_fraction, seed)
    train_file, validation_file = workspace / CLEAN_TRAIN, workspace / CLEAN_VALIDATION
    write_jsonl(train, train_file)
    write_jsonl(validation, validation_file)
    return PreparedData(train_file, validation_file, loaded, len(train), len(validation))


def save_review(workspace: Path, rows: list[dict]) -> Path:
    """Keep the pairs under review on disk, so a closed tab or a crash loses nothing generated."""
    path = Path(workspace) / GENERATED_DIR / REVIEW_FILE
    write_jsonl(rows, path)
    return path


def add_accepted(workspace: Path, rows: list[dict]) -> Path:
    """Append reviewed pairs to the workspace's accepted file (rewritten atomically); return its path."""
    path = Path(workspace) / GENERATED_DIR / ACCEPTED_FILE
    earlier = read_jsonl(path) if path.is_file() else []
    write_jsonl(earlier + rows, path)
    return path


def kalevala_files() -> tuple[Path, Path]:
    """The shipped Kalevala example's train and validation files."""
    return KALEVALA_DIR / "train.jsonl", KALEVALA_DIR / "validation.jsonl"


def kalevala_source() -> Path:
    """The document the Kalevala example's pairs were made from."""
    return KALEVALA_DIR / "source.md"
