"""Read .jsonl/.json/.csv data files into raw numbered rows; the data errors every data module raises."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuning.errors import KanteleError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv")
MAX_ERRORS_SHOWN = 20
MAX_UPLOAD_MB_ENV, MAX_ROWS_ENV = "KANTELE_MAX_UPLOAD_MB", "KANTELE_MAX_ROWS"
DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_ROWS = 50, 100_000
MB = 1024 * 1024
# csv refuses cells over 128 KiB by default, so a legitimate long answer read as "bad quoting"; the upload
# byte limit is what bounds a cell now. 2**31 - 1 because the limit is a C long (32 bits on Windows).
csv.field_size_limit(2**31 - 1)
ROW = "(row)"  # the field name of errors about a whole row
ROW_EXAMPLE = '{"prompt": "...", "response": "..."}'

# The fields that make a row one shape or another. They live here, below the shape logic in
# data_shapes, because the JSON reader needs them too: an object holding one is a row, not a wrapper.
# Order matters: when no shape is complete the first best partial match names the missing field,
# so a lone "prompt" is reported as a missing "response" (the commonest shape).
SHAPE_KEYS = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt/response": ("prompt", "response"),
    "question/answer": ("question", "answer"),
    "alpaca": ("instruction", "output"),
    "prompt/completion": ("prompt", "completion"),
}
# A preference row's fields (tuning.data.preferences): an object holding one is a row too, so a lone
# {"chosen": [...], "rejected": [...]} is read as one conversation pair, not as two lists of rows.
PREFERENCE_KEYS = ("chosen", "rejected")


@dataclass
class RowError:
    """One unusable row: where it is, which field, what is wrong and how to fix it."""

    row: int
    field: str
    message: str
    file: str = ""  # set when several files are loaded together

    def __str__(self):
        where = f"{self.file} row {self.row}" if self.file else f"row {self.row}"
        return f"{where}: {self.field}: {self.message}"


@dataclass(frozen=True)
class UploadLimits:
    """The most bytes and rows one data file, one load (all its files together) and one workspace may hold;
    None means no limit."""

    max_bytes: int | None = None
    max_rows: int | None = None
    request_bytes: int | None = None
    request_rows: int | None = None
    workspace_bytes: int | None = None


def upload_limits(max_mb: float | None = None, max_rows: int | None = None) -> UploadLimits:
    """The app's limits: per file from the arguments, else KANTELE_MAX_UPLOAD_MB / KANTELE_MAX_ROWS, else defaults;
    per load and per workspace from the caps of tuning.guards.caps (off unless the app is shared)."""
    if max_mb is None:
        max_mb = _env_number(MAX_UPLOAD_MB_ENV, DEFAULT_MAX_UPLOAD_MB, "a size in MB like 50", float)
    if max_rows is None:
        max_rows = _env_number(MAX_ROWS_ENV, DEFAULT_MAX_ROWS, "a number of rows like 100000", int)
    from tuning.guards.caps import CapError, caps  # here: data_files sits below every other tuning module

    try:
        now = caps()
    except CapError as error:  # a bad KANTELE_CAP_ setting: shown where the data errors are
        raise DataError(str(error)) from None
    return UploadLimits(max_bytes=int(max_mb * MB), max_rows=int(max_rows), request_bytes=_bytes(now.request_mb),
                        request_rows=now.request_rows, workspace_bytes=_bytes(now.workspace_mb))


def _bytes(mb: float | None) -> int | None:
    return None if mb is None else int(mb * MB)


def _env_number(name: str, default, example: str, kind):
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):  # written this way round, NaN is refused too
        raise DataError(f"{name}={text!r} is not a positive number — set it to {example}, or unset it")
    return value


class DataError(KanteleError, ValueError):
    """A data file that can't be used; .errors is the list of RowError."""

    def __init__(self, summary: str, errors=()):
        self.errors = list(errors)
        lines = [summary] + [str(e) for e in self.errors[:MAX_ERRORS_SHOWN] if str(e) != summary]
        if len(self.errors) > MAX_ERRORS_SHOWN:
            lines.append(f"... and {len(self.errors) - MAX_ERRORS_SHOWN} more")
        super().__init__("\n".join(lines))


def read_rows(path) -> list[tuple[int, dict]]:
    """Read a .jsonl/.json/.csv file into raw (row_number, row) pairs; raise DataError if it can't be read."""
    rows, errors = read_file_rows(Path(path))
    if errors:
        raise summarize_row_errors(errors, Path(path).name)
    return rows


def read_file_rows(path: Path, limits: UploadLimits | None = None) -> tuple[list[tuple[int, dict]], list[RowError]]:
    """Read raw rows and the per-row read errors; file-level problems (and going over limits) raise DataError."""
    limits = limits or UploadLimits()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path.name}: unsupported file type '{suffix or '(none)'}' — "
            f"save it as one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        check_size(path, limits)
        with path.open("rb") as handle:
            # read one byte past the limit: a file that grew after the size check is still caught
            data = handle.read() if limits.max_bytes is None else handle.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found — check the path") from None
    except OSError as e:
        raise DataError(f"{path}: can't read the file ({e.strerror}) — check the path and its permissions") from None
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        raise _too_big(path.name, len(data), limits.max_bytes)
    try:
        text = data.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path.name}: file is not UTF-8 text — re-save it as UTF-8 (first bad byte at offset {e.start})"
        ) from None
    if not text.strip():
        raise DataError(f"{path.name}: file has no rows — add at least one question and its answer")
    parse = {".jsonl": _parse_jsonl, ".json": _parse_json, ".csv": _parse_csv}[suffix]
    rows, errors = parse(text, path.name)
    if not rows and not errors:
        raise DataError(f"{path.name}: file has no rows — add at least one question and its answer")
    count = len({number for number, _ in rows} | {e.row for e in errors})
    check_rows(path.name, count, limits)
    return rows, errors


def check_rows(name: str, count: int, limits: UploadLimits) -> None:
    """Raise DataError when one file holds more rows than the limit per file."""
    if limits.max_rows is not None and count > limits.max_rows:
        raise DataError(
            f"{name}: {count:,} rows, over the limit of {limits.max_rows:,} rows per file — "
            f"split it into smaller files, or ask whoever runs the app to raise {MAX_ROWS_ENV}"
        )


def count_rows(path: Path) -> int:
    """The rows read_file_rows would find (good and bad), counted without building them; 0 for a file it
    would refuse anyway (unreadable, not UTF-8, bad JSON), so that file's own error is the one reported."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return sum(1 for line in text.split("\n") if line.strip())
        if suffix == ".csv":
            return max(0, sum(1 for cells in csv.reader(io.StringIO(text, newline="")) if cells) - 1)  # - header
        if suffix == ".json":
            return len(_find_rows(loads_json(text), path.name)) if text.strip() else 0
    except (OSError, ValueError, csv.Error):  # DataError and UnicodeDecodeError are ValueErrors
        return 0
    return 0


def check_size(path: Path, limits: UploadLimits) -> None:
    """Raise DataError when the file is over the byte limit, before any of it is read."""
    if limits.max_bytes is not None:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise _too_big(path.name, size, limits.max_bytes)


def _too_big(name: str, size: int, limit: int) -> DataError:
    return DataError(
        f"{name}: {format_size(size)}, over the upload limit of {format_size(limit)} per file — "
        f"split it into smaller files, or ask whoever runs the app to raise {MAX_UPLOAD_MB_ENV}"
    )


def format_size(size: int) -> str:
    """A byte count as people read it: '1.5 MB', or '512 bytes' when small."""
    return f"{size / MB:,.1f} MB" if size >= MB / 10 else f"{size:,} bytes"


def summarize_row_errors(errors: list[RowError], names: str) -> DataError:
    """Return one DataError that counts the unusable rows and lists each problem."""
    count = len({(e.file, e.row) for e in errors})
    return DataError(
        f"{names}: {count} {pluralize(count, 'row')} can't be used — fix {'it' if count == 1 else 'them'} and load again",
        errors,
    )


def loads_json(text: str):
    """json.loads, with nesting too deep for Python's recursion limit reported as a ValueError like any bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read (over about 1,000 levels)") from None


def one_line(name: str) -> str:
    """A user-given name safe to quote in a message: line breaks and other unprintables shown as escapes."""
    return name if name.isprintable() else repr(name)[1:-1]


def describe_kind(value) -> str:
    """Name a JSON value's kind the way a person writing the file would: text, a number, a list..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def pluralize(count: int, word: str) -> str:
    """Return word, with an s unless count is one."""
    return word if count == 1 else word + "s"


# --- one parser per format -----------------------------------------------------------------------


def _parse_jsonl(text: str, name: str):
    rows, errors = [], []
    # split on "\n" only: str.splitlines would also split on U+2028, which JSON strings may hold raw
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = loads_json(line)
        except ValueError as e:
            where = f" at column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            errors.append(
                RowError(
                    number,
                    ROW,
                    f"not valid JSON: {getattr(e, 'msg', e)}{where} — fix the line so it holds one JSON object",
                )
            )
            continue
        if isinstance(value, dict):
            rows.append((number, value))
        else:
            hint = "; a JSON array of rows belongs in a .json file" if isinstance(value, list) else ""
            errors.append(
                RowError(
                    number,
                    ROW,
                    f"expected a JSON object, got {describe_kind(value)} — "
                    f"write one object per line like {ROW_EXAMPLE}{hint}",
                )
            )
    return rows, errors


def _parse_json(text: str, name: str):
    try:
        data = loads_json(text)
    except ValueError as e:
        if not isinstance(e, json.JSONDecodeError):
            raise DataError(f"{name}: not valid JSON ({e}) — fix the value and load again") from None
        hint = "; it looks like JSON Lines — rename it to .jsonl" if e.msg == "Extra data" else ""
        raise DataError(
            f"{name}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno} — fix the syntax there{hint}"
        ) from None
    rows, errors = [], []
    for number, value in enumerate(_find_rows(data, name), 1):
        if isinstance(value, dict):
            rows.append((number, value))
        else:
            errors.append(
                RowError(
                    number,
                    ROW,
                    f"expected an object, got {describe_kind(value)} — each row is an object like {ROW_EXAMPLE}",
                )
            )
    return rows, errors


def _find_rows(data, name: str) -> list:
    """Find the rows in a JSON document: an array, one list under some key, an id -> row map, or one row."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise DataError(f"{name}: expected an array of rows, got {describe_kind(data)} — write [{ROW_EXAMPLE}, ...]")
    if not data:
        return []
    shape_keys = {k for keys in SHAPE_KEYS.values() for k in keys} | set(PREFERENCE_KEYS)
    if any(str(k).strip().lower() in shape_keys for k in data):
        return [data]
    lists = {k: v for k, v in data.items() if isinstance(v, list) and all(isinstance(x, dict) for x in v)}
    filled = [k for k, v in lists.items() if v]
    if len(filled) > 1:
        raise DataError(
            f"{name}: the file holds several lists of rows ({', '.join(map(one_line, filled))}) — "
            "keep one, or save each in its own file and load them together"
        )
    if filled:
        return lists[filled[0]]
    if lists:
        return []
    if all(isinstance(v, dict) for v in data.values()):
        return list(data.values())
    raise DataError(
        f"{name}: can't find the rows — expected an array of rows, an object with one list of rows "
        f'(like {{"data": [...]}}), or an object mapping ids to rows'
    )


def _parse_csv(text: str, name: str):
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": quoted cells may hold line breaks
    rows, errors = [], []
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise DataError(
                f"{name}: the first line must be the header with column names like prompt,response — add it"
            )
        header = [h or f"(column {i})" for i, h in enumerate(header, 1)]  # unnamed columns stay visible in reports
        lowered = [h.lower() for h in header]
        twice = sorted({h for h in lowered if lowered.count(h) > 1})
        if twice:
            raise DataError(
                f"{name}: the header names {', '.join(map(one_line, twice))} more than once (names ignore case) — "
                "rename or remove the copies"
            )
        for number, cells in enumerate(reader, 1):
            if not cells:
                continue
            if len(cells) > len(header):
                if any(c.strip() for c in cells[len(header) :]):
                    errors.append(
                        RowError(
                            number,
                            ROW,
                            f"has {len(cells)} cells but the header has {len(header)} columns — "
                            "quote cells that contain commas",
                        )
                    )
                    continue
                cells = cells[: len(header)]  # trailing empty cells hold nothing
            cells += [""] * (len(header) - len(cells))
            rows.append((number, dict(zip(header, cells, strict=True))))
    except csv.Error as e:
        raise DataError(
            f"{name}: can't read the CSV near line {reader.line_num}: {e} — check the quoting there"
        ) from None
    return rows, errors
