"""Load preference data -- a prompt, a better answer (chosen) and a worse one (rejected) -- as the conversational
rows TRL's preference trainers (DPOTrainer and kin) read, with row-numbered errors; fingerprint and write them.

Every row comes out as
    {"prompt": [turns, the last a user turn], "chosen": [{"role": "assistant", ...}], "rejected": [...]}
plus its "provenance" when it had one. Three shapes go in (and may mix within one file):
- "text": prompt, chosen and rejected are text.
- "messages": a prompt (text or a list of turns), with chosen and rejected as lists of turns that are either the
  answer alone or the prompt's turns repeated before it (as in UltraFeedback-binarized on the Hub); the turns before
  the answer are then the prompt, and a text prompt must be their last user turn.
- "conversations": no prompt; chosen and rejected are whole conversations that share every turn but the last (as in
  Anthropic HH written as message lists), and the shared turns are the prompt.
"question" and "instruction" are read as the prompt, as they are in the QA shapes (an alpaca "input" is added to
the instruction the same way); a row holding two of them is an error, since which one is the prompt is not ours to
guess. Turns are written {"role", "content"} or ShareGPT's {"from", "value"}; a CSV cell may hold them as JSON text.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tuning.data.examples import fingerprint_examples, write_jsonl
from tuning.data.files import (
    ROW,
    DataError,
    RowError,
    UploadLimits,
    describe_kind,
    loads_json,
    pluralize,
    read_file_rows,
    summarize_row_errors,
)
from tuning.data.shapes import ALPACA_INPUT_FIELD, ROLE_NAMES, TURNS_EXAMPLE, is_blank

PROMPT_FIELDS = ("prompt", "question", "instruction")  # the first is the name written out
ANSWER_FIELDS = ("chosen", "rejected")
PROVENANCE_FIELD = "provenance"
PREFERENCE_EXAMPLE = '{"prompt": "...", "chosen": "the better answer", "rejected": "the worse answer"}'
PROMPT_FIX = "write the question both answers reply to"
ANSWER_FIX = {"chosen": "write the better answer", "rejected": "write the worse answer"}
ROLES = "system, user or assistant (or ShareGPT's human, gpt)"


@dataclass
class PreferenceReport:
    """What loading did to the preference rows: counts, and the row numbers behind each count."""

    rows_read: int = 0
    empty: int = 0
    empty_rows: list[int] = field(default_factory=list)
    duplicates_removed: int = 0
    duplicate_rows: list[int] = field(default_factory=list)
    kept: int = 0
    shape_counts: dict[str, int] = field(default_factory=dict)  # "text", "messages", "conversations"
    ignored_fields: dict[str, int] = field(default_factory=dict)  # field name -> rows where it held data
    notes: list[str] = field(default_factory=list)  # one line per skipped row, with its file when several

    def summary(self) -> str:
        """One human line, e.g. 'read 40 preference rows: 38 kept, 1 empty, 1 duplicate removed'."""
        line = (f"read {self.rows_read} preference {pluralize(self.rows_read, 'row')}: {self.kept} kept, "
                f"{self.empty} empty, {self.duplicates_removed} {pluralize(self.duplicates_removed, 'duplicate')} "
                "removed")
        if self.ignored_fields:
            line += "; ignored fields: " + ", ".join(f"{k or '(unnamed)'} ({n})" for k, n in self.ignored_fields.items())
        return line


@dataclass
class LoadedPreferences:
    """Normalized preference rows and the report of how they were read."""

    rows: list[dict]
    report: PreferenceReport


def load_preferences(paths, limits: UploadLimits | None = None) -> LoadedPreferences:
    """Read one or several .jsonl/.json/.csv files of preference pairs into validated, deduplicated TRL rows and a
    report; every unusable row of every file is reported together in one DataError (limits: per file)."""
    path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not path_list:
        raise DataError("no preference files given — pass at least one .jsonl, .json or .csv file")
    names = [Path(p).name for p in path_list]
    # errors name the file only when there are several; the full path only when two share a name
    labels = [(str(p) if names.count(n) > 1 else n) if len(names) > 1 else ""
              for p, n in zip(path_list, names, strict=True)]
    report = PreferenceReport()
    kept, errors, seen = [], [], {}
    for path, label in zip(map(Path, path_list), labels, strict=True):
        rows, read_errors = read_file_rows(path, limits)
        errors += [dataclasses.replace(e, file=label) for e in read_errors]
        cells_are_text = path.suffix.lower() == ".csv"  # a CSV cell can only hold a list of turns as JSON text
        for number, raw in rows:
            where = f"{label} row {number}" if label else f"row {number}"
            report.rows_read += 1
            if all(is_blank(v) for v in raw.values()):
                report.empty += 1
                report.empty_rows.append(number)
                report.notes.append(f"{where}: every field is blank — skipped")
                continue
            try:
                row, shape, ignored = _normalize(raw, number, cells_are_text)
            except DataError as e:
                errors += [dataclasses.replace(x, file=label) for x in e.errors]
                continue
            key = json.dumps([row["prompt"], row["chosen"], row["rejected"]], ensure_ascii=False)  # not provenance
            if key in seen:
                report.duplicates_removed += 1
                report.duplicate_rows.append(number)
                report.notes.append(f"{where}: duplicate of {seen[key]} — removed")
                continue
            seen[key] = where
            report.shape_counts[shape] = report.shape_counts.get(shape, 0) + 1
            for name in ignored:
                report.ignored_fields[name] = report.ignored_fields.get(name, 0) + 1
            kept.append(row)
    if errors:
        raise summarize_row_errors(errors, ", ".join(names))
    if not kept:
        raise DataError(f"{', '.join(names)}: no rows with data — every row is blank; fill in prompt, chosen and "
                        f"rejected like {PREFERENCE_EXAMPLE}")
    report.kept = len(kept)
    return LoadedPreferences(rows=kept, report=report)


def fingerprint_preferences(rows) -> str:
    """The sha256 hex of the rows' canonical JSON (sorted keys), to pin a run to its preference data."""
    return fingerprint_examples(rows)  # the same canonical form: one way to fingerprint data


def write_preferences(rows, path) -> None:
    """Write preference rows one JSON object per line, atomically."""
    write_jsonl(rows, path)


# --- one row ---------------------------------------------------------------------------------------------------


def _normalize(row: dict, number: int, cells_are_text: bool) -> tuple[dict, str, list[str]]:
    """Return (the TRL row, its shape, the names of fields that held data but were not used)."""
    row = _lower_keys(row, number, "")
    prompt_key = _prompt_key(row, number)
    for key in ANSWER_FIELDS:
        if key not in row:
            _fail(number, key, f"missing '{key}' — {_missing_hint(row)}")
    chosen, rejected = (_read_side(row, key, number, cells_are_text) for key in ANSWER_FIELDS)
    answers = [_answer_turn(side, key, number) for side, key in ((chosen, "chosen"), (rejected, "rejected"))]
    prefix, prefix_key = _shared_prefix(chosen, rejected, number)
    if prompt_key is None:
        if not prefix:
            named = next((k for k in PROMPT_FIELDS if k in row), "prompt")
            _fail(number, named, ("empty — " if named in row else f"missing '{named}' — ") + PROMPT_FIX +
                  " (or write chosen and rejected as whole conversations, the question included)")
        prompt, prompt_was_text, shape = prefix, False, "conversations"
    else:
        prompt, prompt_was_text = _read_prompt(row, prompt_key, prefix, number, cells_are_text)
        shape = "text" if prompt_was_text and isinstance(chosen, str) and isinstance(rejected, str) else "messages"
    _check_prompt(prompt, prefix_key if prompt is prefix else prompt_key, number)
    chosen, rejected = answers
    if chosen["content"] == rejected["content"]:
        _fail(number, "rejected", "the same answer as chosen — a pair teaches only when one answer is better; "
                                  "write the worse answer, or remove the row")
    out = {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}
    if not is_blank(row.get(PROVENANCE_FIELD)):
        _check_writable(json.dumps(row[PROVENANCE_FIELD], ensure_ascii=False), number, PROVENANCE_FIELD)
        out[PROVENANCE_FIELD] = row[PROVENANCE_FIELD]
    used = {*ANSWER_FIELDS, PROVENANCE_FIELD, prompt_key}
    if prompt_key == "instruction" and prompt_was_text:  # joined to the instruction; beside turns it is reported
        used.add(ALPACA_INPUT_FIELD)
    ignored = [k for k, v in row.items() if k not in used and not is_blank(v)]
    return out, shape, ignored


def _prompt_key(row: dict, number: int) -> str | None:
    """The one prompt field holding data, or None; two holding data is an error."""
    filled = [k for k in PROMPT_FIELDS if not is_blank(row.get(k))]
    if len(filled) > 1:
        _fail(number, ROW, f"holds both '{filled[0]}' and '{filled[1]}' — keep the one that is the prompt")
    return filled[0] if filled else None


def _missing_hint(row: dict) -> str:
    if any(k in row for k in ("response", "answer", "output", "completion", "messages", "conversations")):
        return ("this row looks like a question and its answer, not a preference pair; load it as training data, "
                f"or give the better and the worse answer like {PREFERENCE_EXAMPLE}")
    return f"every row needs a prompt, the better answer (chosen) and a worse one (rejected), like {PREFERENCE_EXAMPLE}"


def _read_side(row: dict, key: str, number: int, cells_are_text: bool) -> str | list[dict]:
    """chosen or rejected as text, or as a list of turns."""
    return _read_value(row[key], key, number, ANSWER_FIX[key], cells_are_text)


def _read_value(value, key: str, number: int, fix: str, cells_are_text: bool) -> str | list[dict]:
    if is_blank(value):
        _fail(number, key, f"empty — {fix}")
    if isinstance(value, str) and cells_are_text and value.lstrip().startswith("["):
        try:
            parsed = loads_json(value)
        except ValueError:
            parsed = None  # text that happens to start with "[": an answer, not turns
        if isinstance(parsed, list) and parsed and all(isinstance(turn, dict) for turn in parsed):
            value = parsed
    if isinstance(value, str):
        _check_writable(value, number, key)
        return value.strip()
    if isinstance(value, list):
        return _read_turns(value, key, number)
    _fail(number, key, f"expected text or a list of turns, got {describe_kind(value)} — write it as a quoted "
                       f"string or like {TURNS_EXAMPLE}")


def _read_turns(value: list, key: str, number: int) -> list[dict]:
    turns = []
    for i, turn in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            _fail(number, where, f"expected an object, got {describe_kind(turn)} — write each turn like "
                                 '{"role": "user", "content": "..."}')
        turn = _lower_keys(turn, number, where)
        role_key = "from" if "from" in turn and "role" not in turn else "role"
        content_key = "value" if "value" in turn and "content" not in turn else "content"
        role = turn.get(role_key)
        if role is None:
            _fail(number, f"{where}.{role_key}", f"missing — each turn needs {role_key} ({ROLES}) and {content_key}")
        if not isinstance(role, str) or role.strip().lower() not in ROLE_NAMES:
            _fail(number, f"{where}.{role_key}", f"unknown role {_short(role)} — use {ROLES}")
        content = turn.get(content_key)
        name = f"{where}.{content_key}"
        if content_key not in turn:
            _fail(number, name, f"missing '{content_key}' — each turn needs {role_key} and {content_key}")
        if is_blank(content):
            _fail(number, name, "empty — write the turn's text, or remove the turn")
        if not isinstance(content, str):
            _fail(number, name, f"expected text, got {describe_kind(content)} — write it as a quoted string")
        _check_writable(content, number, name)
        turns.append({"role": ROLE_NAMES[role.strip().lower()], "content": content.strip()})
    return turns


def _shared_prefix(chosen, rejected, number: int) -> tuple[list[dict], str]:
    """The turns chosen and rejected repeat before their answers (empty when neither does) and the field they were
    read from; two different ones are an error, naming the first turn where they part."""
    prefixes = [side[:-1] if isinstance(side, list) else [] for side in (chosen, rejected)]
    if prefixes[0] and prefixes[1] and prefixes[0] != prefixes[1]:
        i = _first_difference(*prefixes)
        _fail(number, f"rejected[{i}]", f"differs from chosen[{i}] — chosen and rejected must share every turn "
                                        "before their answers (the prompt); fix the turn, or give just the answers "
                                        "and put the conversation in 'prompt'")
    return (prefixes[0], "chosen") if prefixes[0] else (prefixes[1], "rejected")


def _read_prompt(row: dict, key: str, prefix: list[dict], number: int, cells_are_text: bool) -> tuple[list[dict], bool]:
    """The prompt's turns, matched against the turns the answers repeat (if they do); and whether it was text."""
    value = _read_value(row[key], key, number, PROMPT_FIX, cells_are_text)
    if isinstance(value, list):
        if prefix and prefix != value:
            i = _first_difference(prefix, value)
            _fail(number, f"chosen[{i}]", f"differs from {key}[{i}] — the turns chosen and rejected repeat before "
                                          "their answers must be exactly the prompt's; fix the turn, or give just "
                                          "the answers")
        return value, False
    extra = row.get(ALPACA_INPUT_FIELD) if key == "instruction" else None
    if not is_blank(extra):  # alpaca: the instruction's input belongs to the question, as in the QA shapes
        if not isinstance(extra, str):
            _fail(number, ALPACA_INPUT_FIELD, f"expected text, got {describe_kind(extra)} — write it as a quoted "
                                              "string")
        _check_writable(extra, number, ALPACA_INPUT_FIELD)
        value = f"{value}\n\n{extra.strip()}"
    if not prefix:
        return [{"role": "user", "content": value}], True
    last_user = next((t["content"] for t in reversed(prefix) if t["role"] == "user"), None)
    if last_user != value:
        _fail(number, key, "differs from the last user turn that chosen and rejected repeat — make them the same "
                           "question, or give chosen and rejected as just the answers")
    return prefix, True


def _check_prompt(prompt: list[dict], key: str, number: int) -> None:
    """Fail unless the prompt runs: optional system turn, ..., a user turn last."""
    for i, turn in enumerate(prompt):
        if turn["role"] == "system" and i > 0:
            _fail(number, f"{key}[{i}].role", "a system turn must come first — move it to the start")
    if prompt[-1]["role"] != "user":
        where = f"{key}[{len(prompt) - 1}].role"
        _fail(number, where, f"the prompt ends with the {prompt[-1]['role']}'s turn — end it with the user's question "
                             "that chosen and rejected answer")


def _answer_turn(side, key: str, number: int) -> dict:
    """The answer of chosen or rejected: its text, or its list's last turn, which must be the assistant's."""
    if isinstance(side, str):
        return {"role": "assistant", "content": side}
    last = side[-1]
    if last["role"] != "assistant":
        _fail(number, f"{key}[{len(side) - 1}].role", f"the last turn is from the {last['role']} — end {key} with "
                                                      "the assistant's answer")
    return {"role": "assistant", "content": last["content"]}


def _first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _lower_keys(mapping: dict, number: int, where: str) -> dict:
    """Field names ignore case and surrounding spaces; two names that collide would lose one, so fail."""
    out, original = {}, {}
    for key, value in mapping.items():
        name = str(key).strip().lower()
        if name in out:
            _fail(number, f"{where}.{name}" if where else name or "(unnamed)",
                  f"the fields {_short(original[name])} and {_short(key)} are the same name (names ignore case) — "
                  "keep one")
        out[name], original[name] = value, key
    return out


def _check_writable(text: str, number: int, field_name: str) -> None:
    """Fail on a lone surrogate escape (JSON's "\\ud800"): it loads, but no file could store the cleaned rows."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        _fail(number, field_name, f"holds {text[e.start]!r}, half of a character pair, which no text file can "
                                  "store — remove that escape or write the character itself")


def _fail(number: int, field_name: str, message: str):
    error = RowError(number, field_name, message)
    raise DataError(str(error), [error])


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
