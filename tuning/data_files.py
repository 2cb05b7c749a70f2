"""Read .jsonl/.json/.csv data files into raw numbered rows; the data errors every data module raises."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv")
MAX_ERRORS_SHOWN = 20
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


class DataError(ValueError):
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


def read_file_rows(path: Path) -> tuple[list[tuple[int, dict]], list[RowError]]:
    """Read raw rows and the per-row read errors; file-level problems raise DataError at once."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path.name}: unsupported file type '{suffix or '(none)'}' — "
            f"save it as one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found — check the path") from None
    except OSError as e:
        raise DataError(f"{path}: can't read the file ({e.strerror}) — check the path and its permissions") from None
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
    return rows, errors


def summarize_row_errors(errors: list[RowError], names: str) -> DataError:
    """Return one DataError that counts the unusable rows and lists each problem."""
    count = len({(e.file, e.row) for e in errors})
    return DataError(
        f"{names}: {count} {pluralize(count, 'row')} can't be used — fix {'it' if count == 1 else 'them'} and load again",
        errors,
    )


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
            value = json.loads(line)
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
        data = json.loads(text)
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
    shape_keys = {k for keys in SHAPE_KEYS.values() for k in keys}
    if any(str(k).strip().lower() in shape_keys for k in data):
        return [data]
    lists = {k: v for k, v in data.items() if isinstance(v, list) and all(isinstance(x, dict) for x in v)}
    filled = [k for k, v in lists.items() if v]
    if len(filled) > 1:
        raise DataError(
            f"{name}: the file holds several lists of rows ({', '.join(filled)}) — "
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
                f"{name}: the header names {', '.join(twice)} more than once (names ignore case) — "
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
