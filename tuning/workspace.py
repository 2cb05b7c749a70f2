"""A visitor's working dataset: their uploads kept as given, the cleaned split beside them.

The app gives each browser session its own folder (named by a random id, never by user
text), so visitors of a shared Space never see each other's data.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tuning.atomic import staged_file
from tuning.data import LoadedData, load_examples, read_jsonl, split_examples, write_jsonl
from tuning.data_files import UploadLimits, check_size, upload_limits

UPLOADS_DIR = "uploads"  # originals, untouched
GENERATED_DIR = "generated"
REVIEW_FILE = "review.jsonl"  # generated pairs awaiting review, saved after every batch
ACCEPTED_FILE = "accepted.jsonl"  # reviewed pairs that joined the working dataset
CLEAN_TRAIN = "train.jsonl"
CLEAN_VALIDATION = "validation.jsonl"
KALEVALA_DIR = Path(__file__).resolve().parents[1] / "datasets" / "kalevala"


@dataclass
class PreparedData:
    """The cleaned dataset of a workspace and how it was made."""

    train_file: Path
    validation_file: Path
    loaded: LoadedData
    train_count: int
    validation_count: int


def new_workspace(root: str | Path) -> Path:
    """A fresh private folder under root."""
    folder = Path(root) / uuid.uuid4().hex
    (folder / UPLOADS_DIR).mkdir(parents=True)
    return folder


def keep_uploads(workspace: Path, files: list[str | Path], limits: UploadLimits | None = None) -> list[Path]:
    """Copy uploads into the workspace as they are (name kept, path not trusted); DataError if one is too big."""
    limits = limits or upload_limits()
    sources = [Path(source) for source in files]
    for source in sources:
        check_size(source, limits)
    kept = []
    for number, source in enumerate(sources, start=1):
        target = workspace / UPLOADS_DIR / f"{number:02d}-{Path(source.name).name}"
        with staged_file(target) as temp:  # a crash mid-copy leaves no half original to load later
            shutil.copyfile(source, temp)
        kept.append(target)
    return kept


def prepare_dataset(workspace: Path, files: list[Path], validation_fraction: float, seed: int,
                    max_tokens: int | None = None, count_tokens=None,
                    validation_files: list[Path] | None = None, limits: UploadLimits | None = None) -> PreparedData:
    """Validate, dedupe and split the files into the workspace's cleaned train/validation JSONL (within limits)."""
    limits = limits or upload_limits()
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
