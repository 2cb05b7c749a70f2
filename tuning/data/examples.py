"""Load QA data files as validated, deduplicated chat examples; split, write, read back and fingerprint them.

Reading files lives in tuning.data.files, row shapes in tuning.data.shapes; their public names are
re-exported here, so `from tuning.data.examples import ...` is the one import callers need.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tuning.atomic import staged_file
from tuning.data.files import (
    SUPPORTED_SUFFIXES,
    DataError,
    RowError,
    UploadLimits,
    pluralize,
    read_file_rows,
    read_rows,
    summarize_row_errors,
)
from tuning.data.hub_dataset import hub_examples_rows
from tuning.data.hub_spec import is_hub_spec
from tuning.data.shapes import (
    PASSTHROUGH_FIELDS,
    is_blank,
    normalize_row,
    normalize_row_with_shape,
)
from tuning.errors import UsageError

__all__ = [
    "PASSTHROUGH_FIELDS",
    "SUPPORTED_SUFFIXES",
    "DataError",
    "DataReport",
    "LoadedData",
    "RowError",
    "UploadLimits",
    "find_overlap",
    "fingerprint_examples",
    "load_examples",
    "normalize_row",
    "read_jsonl",
    "read_rows",
    "reference_answers",
    "split_examples",
    "user_prompts",
    "write_jsonl",
]


@dataclass
class DataReport:
    """What loading did to the rows: counts, and the row numbers behind each count."""

    rows_read: int = 0
    empty: int = 0
    empty_rows: list[int] = field(default_factory=list)
    duplicates_removed: int = 0
    duplicate_rows: list[int] = field(default_factory=list)
    too_long: int = 0
    too_long_rows: list[int] = field(default_factory=list)
    kept: int = 0
    shape_counts: dict[str, int] = field(default_factory=dict)
    max_tokens: int | None = None  # set only when lengths were counted
    ignored_fields: dict[str, int] = field(default_factory=dict)  # field name -> rows where it held data
    notes: list[str] = field(default_factory=list)  # one line per skipped or flagged row, with its file when several
    revisions: dict[str, str] = field(default_factory=dict)  # a hub: entry -> the commit its rows came from

    def summary(self) -> str:
        """One human line, e.g. 'read 340 rows: 338 kept, 1 empty, 1 duplicate removed'."""
        parts = [
            f"{self.kept} kept",
            f"{self.empty} empty",
            f"{self.duplicates_removed} {pluralize(self.duplicates_removed, 'duplicate')} removed",
        ]
        if self.max_tokens is not None:
            parts.append(f"{self.too_long} too long for {self.max_tokens} tokens")
        line = f"read {self.rows_read} {pluralize(self.rows_read, 'row')}: " + ", ".join(parts)
        if self.ignored_fields:
            line += "; ignored fields: " + ", ".join(
                f"{k or '(unnamed)'} ({n})" for k, n in self.ignored_fields.items()
            )
        if self.revisions:
            line += "; " + ", ".join(f"{entry} at revision {sha}" for entry, sha in self.revisions.items())
        return line


@dataclass
class LoadedData:
    """Normalized examples and the report of how they were read."""

    examples: list[dict]
    report: DataReport


def load_examples(paths, max_tokens=None, count_tokens=None, limits: UploadLimits | None = None) -> LoadedData:
    """Read one or several data files (or hub: datasets, tuning.data.hub_dataset) into validated, deduplicated chat
    examples and a report (limits: per file)."""
    path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not path_list:
        raise DataError("no data files given — pass at least one .jsonl, .json or .csv file")
    names = [p if is_hub_spec(p) else Path(p).name for p in path_list]
    # errors name the file only when there are several; the full path only when two share a name
    labels = [
        (str(p) if names.count(n) > 1 else n) if len(names) > 1 else "" for p, n in zip(path_list, names, strict=True)
    ]
    counting = max_tokens is not None and count_tokens is not None
    report = DataReport(max_tokens=max_tokens if counting else None)
    examples, places, errors, seen = [], [], [], {}
    for path, label in zip(path_list, labels, strict=True):
        if is_hub_spec(path):
            rows, report.revisions[path] = hub_examples_rows(path, limits)
            read_errors = []
        else:
            rows, read_errors = read_file_rows(Path(path), limits)
        errors += [dataclasses.replace(e, file=label) for e in read_errors]
        for number, row in rows:
            where = f"{label} row {number}" if label else f"row {number}"
            report.rows_read += 1
            if all(is_blank(v) for v in row.values()):
                report.empty += 1
                report.empty_rows.append(number)
                report.notes.append(f"{where}: every field is blank — skipped")
                continue
            try:
                example, shape, ignored = normalize_row_with_shape(row, number)
            except DataError as e:
                errors += [dataclasses.replace(x, file=label) for x in e.errors]
                continue
            key = _dedupe_key(example["messages"])
            if key in seen:
                report.duplicates_removed += 1
                report.duplicate_rows.append(number)
                report.notes.append(f"{where}: duplicate of {seen[key]} — removed")
                continue
            seen[key] = where
            report.shape_counts[shape] = report.shape_counts.get(shape, 0) + 1
            for name in ignored:
                report.ignored_fields[name] = report.ignored_fields.get(name, 0) + 1
            examples.append(example)
            places.append((number, where))
    if errors:
        raise summarize_row_errors(errors, ", ".join(names))
    if not examples:
        raise DataError(
            f"{', '.join(names)}: file has no rows with data — every row is blank; fill in the questions and answers"
        )
    if counting:
        for example, (number, where) in zip(examples, places, strict=True):
            tokens = count_tokens(example["messages"])
            if tokens > max_tokens:
                report.too_long += 1
                report.too_long_rows.append(number)
                report.notes.append(f"{where}: {tokens} tokens, over {max_tokens} — kept, training truncates it")
    report.kept = len(examples)
    return LoadedData(examples=examples, report=report)


def split_examples(examples, validation_fraction: float, seed: int) -> tuple[list, list]:
    """Shuffle with the seed and split into (train, validation); at least one validation example if asked."""
    if not 0 <= validation_fraction < 1:
        raise UsageError(f"validation_fraction must be at least 0 and below 1, got {validation_fraction} — try 0.1")
    examples = list(examples)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_validation = 0
    if validation_fraction > 0 and len(examples) >= 2:
        n_validation = min(len(examples) - 1, max(1, int(len(examples) * validation_fraction + 0.5)))
    validation = [examples[i] for i in order[:n_validation]]
    train = [examples[i] for i in order[n_validation:]]
    return train, validation


def find_overlap(train_examples, validation_examples) -> list[int]:
    """Return the 1-based indexes of validation examples whose question is also a user turn in train."""
    # a held-out question the model trained on scores its memory, not what it learned; fold the text
    # as dedupe does, so a copy that differs only in case or punctuation is caught too
    asked = {
        fold_text(turn.get("content", ""))
        for example in train_examples
        for turn in example.get("messages", [])
        if turn.get("role") == "user"
    }
    return [i for i, prompt in enumerate(user_prompts(validation_examples), 1) if fold_text(prompt) in asked]


def write_jsonl(examples, path) -> None:
    """Write examples one JSON object per line, atomically (temp file in the same folder, then replace)."""
    with staged_file(path, durable=True) as temp, open(temp, "w", encoding="utf-8", newline="\n") as f:
        for example in examples:
            f.write(json.dumps(example, ensure_ascii=False) + "\n")


def read_jsonl(path) -> list[dict]:
    """Read a JSONL file we wrote (one object per line, blank lines skipped)."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise DataError(
                    f"{path.name} line {number}: not valid JSON ({e}) — the file may be cut short; write it again"
                ) from None
    return rows


def fingerprint_examples(examples) -> str:
    """Return the sha256 hex of the examples' canonical JSON (sorted keys), to pin a run to its data."""
    blob = json.dumps(list(examples), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def user_prompts(examples) -> list[str]:
    """Return the last user turn of each example."""
    return [_last_turn(example, "user", i) for i, example in enumerate(examples)]


def reference_answers(examples) -> list[str]:
    """Return the last assistant turn of each example."""
    return [_last_turn(example, "assistant", i) for i, example in enumerate(examples)]


def _dedupe_key(messages: list[dict]) -> tuple:
    """The conversation with case, width, whitespace and punctuation differences folded away."""
    return tuple((turn["role"], fold_text(turn["content"])) for turn in messages)


def fold_text(text: str) -> str:
    """Fold case, width, whitespace and punctuation away, so near-copies compare equal."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


def _last_turn(example: dict, role: str, index: int) -> str:
    for turn in reversed(example.get("messages", [])):
        if turn.get("role") == role:
            return turn.get("content", "")
    raise DataError(f"example {index + 1} has no {role} turn — load the data with load_examples, which checks this")
