"""A visitor's feedback on chat answers -- a vote between the two panes, a corrected answer -- kept in their own
workspace: add, list, delete, download.

Each workspace holds its items in one file, feedback/feedback.jsonl, so visitors of a shared app never see each
other's. Every change rewrites that file atomically (tuning.atomic) under a lock of its own: two requests of one
visitor at once (a double click, two tabs) both land, and a reader never sees half a file. The lock is per process,
which is enough: one app process serves a workspace.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tuning.data.examples import read_jsonl, write_jsonl
from tuning.data.files import DataError
from tuning.errors import UsageError
from tuning.guards.caps import CAP_ENV_PREFIX, MAX_NAME_CHARS, caps, check_cap

FEEDBACK_DIR = "feedback"
FEEDBACK_FILE = "feedback.jsonl"
# The training data made from the feedback (tuning.feedback.convert) sits beside it; a delete removes them, so
# deleted feedback lives on nowhere, and the next write_training_files makes them again from what is kept.
CORRECTIONS_FILE = "corrections.jsonl"  # SFT rows, the messages format load_examples reads
PREFERENCES_FILE = "preferences.jsonl"  # prompt/chosen/rejected rows, the format load_preferences reads
VOTES = ("left", "right", "both_wrong")  # left: the base model's pane; right: the tuned model's
MAX_SETTINGS_CHARS = 4_000  # generation settings are a handful of numbers; anything longer is not settings
ID_PATTERN = re.compile(r"[0-9a-f]{1,64}")
TEXT_FIELDS = {"question": "question", "base_answer": "base model's answer", "tuned_answer": "tuned model's answer",
               "correction": "correction"}
SHORTER = {"question": "ask a shorter question", "correction": "shorten the correction"}  # else: a shorter answer

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(kw_only=True)
class FeedbackItem:
    """One piece of feedback on one question answered side by side."""

    id: str = field(default_factory=lambda: secrets.token_hex(8))
    time: str = field(default_factory=_now)  # ISO 8601, UTC
    question: str
    base_answer: str
    tuned_answer: str
    run: str | None = None  # the run whose adapter answered on the right, if it was a run
    adapter: str | None = None  # the adapter as the visitor named it: a run id or a Hub id
    settings: dict = field(default_factory=dict)  # the generation settings both answers were made with
    vote: str | None = None  # one of VOTES
    correction: str | None = None  # the answer the tuned model should have given

    def to_json(self) -> dict:
        """The item as a JSON-ready dict (one line of the feedback file)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FeedbackItem:
        """The item a to_json dict describes; DataError when one of its fields is missing or unknown."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise DataError(f"a feedback item must be an object, got {type(data).__name__} — delete it and vote again")
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("question", "base_answer", "tuned_answer") if n not in data)
        if unknown or missing:
            problem = f"unknown fields {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
            raise DataError(f"feedback item {str(data.get('id', '?'))[:64]}: {problem} — delete it and vote again")
        return cls(**data)


def feedback_file(workspace: Path) -> Path:
    """Where a workspace keeps its feedback."""
    return Path(workspace) / FEEDBACK_DIR / FEEDBACK_FILE


def add_feedback(workspace: Path, item: FeedbackItem) -> FeedbackItem:
    """Check the item and keep it in the workspace; an item with the id of a kept one replaces it where it stands
    (a changed vote, a correction added later). UsageError or CapError, and nothing kept, when it can't be."""
    check_feedback(item)
    path = feedback_file(workspace)
    with _lock(path):
        items = _read(path)
        place = next((i for i, kept in enumerate(items) if kept.id == item.id), None)
        if place is None:
            check_cap(len(items) + 1, caps().feedback_items, "the feedback items in this workspace",
                      "delete the ones you no longer need (download them first), or ask whoever runs the app to "
                      f"raise {CAP_ENV_PREFIX}FEEDBACK_ITEMS")
            items.append(item)
        else:
            items[place] = item
        _write(path, items)
    return item


def list_feedback(workspace: Path) -> list[FeedbackItem]:
    """The workspace's feedback, oldest first."""
    return _read(feedback_file(workspace))  # written by whole-file replace, so no lock is needed to read


def delete_feedback(workspace: Path, ids) -> int:
    """Delete the workspace's items with these ids, and the training files made from them; returns how many went
    (an id it doesn't hold is skipped)."""
    doomed = {ids} if isinstance(ids, str) else set(ids)
    path = feedback_file(workspace)
    with _lock(path):
        items = _read(path)
        kept = [item for item in items if item.id not in doomed]
        if len(kept) != len(items):
            _write(path, kept)
            for name in (CORRECTIONS_FILE, PREFERENCES_FILE):
                (path.parent / name).unlink(missing_ok=True)
    return len(items) - len(kept)


def feedback_jsonl(workspace: Path) -> Path:
    """The workspace's feedback as a JSONL file to download, one item a line; UsageError when there is none."""
    path = feedback_file(workspace)
    if not list_feedback(workspace):
        raise UsageError("no feedback to download yet — vote under an answer on the Chat tab, or correct one")
    return path


def check_feedback(item: FeedbackItem) -> None:
    """UsageError naming the field and the fix when the item can't be kept; CapError when a text is over its cap
    (a correction is never cut short to fit)."""
    if not isinstance(item.id, str) or not ID_PATTERN.fullmatch(item.id):
        raise UsageError(f"feedback id {str(item.id)[:70]!r} is not lowercase hex — leave it out for a fresh one")
    try:
        datetime.fromisoformat(item.time)
    except (TypeError, ValueError):
        raise UsageError(f"feedback time {str(item.time)[:70]!r} is not an ISO 8601 time — leave it out for now") from None
    limit = caps().feedback_chars
    for name, label in TEXT_FIELDS.items():
        text = getattr(item, name)
        if name == "correction" and text is None:
            continue
        if not isinstance(text, str):
            raise UsageError(f"the {label} must be text, got {type(text).__name__}")
        _check_encodable(text, label)
        if limit is not None:
            shorter = SHORTER.get(name, "ask for a shorter answer (lower Max new tokens)")
            check_cap(len(text), limit, f"the {label}'s length in characters",
                      f"{shorter} ({limit:,} characters or fewer), or ask whoever runs the app to raise "
                      f"{CAP_ENV_PREFIX}FEEDBACK_CHARS")
    if not item.question.strip():
        raise UsageError("the question is empty — feedback belongs to a question and its two answers; ask one first")
    if item.vote is not None and item.vote not in VOTES:
        raise UsageError(f"vote {str(item.vote)[:40]!r} is not one of {', '.join(VOTES)} — left: the base model's "
                         "answer is better, right: the tuned model's, both_wrong: neither is right")
    if item.correction is not None:
        if not item.correction.strip():
            raise UsageError("the correction is empty — write the answer the model should have given, or leave "
                             "the correction out and just vote")
        if item.correction.strip() == item.tuned_answer.strip():
            raise UsageError("the correction is the tuned model's answer unchanged — edit it into the answer it "
                             "should have given, or vote instead")
    if item.vote is None and item.correction is None:
        raise UsageError("nothing to keep: no vote and no correction — vote for an answer, or correct one")
    for name in ("run", "adapter"):
        value = getattr(item, name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS):
            raise UsageError(f"the {name} must be a run id or Hub id of 1 to {MAX_NAME_CHARS} characters, or none")
        if value is not None:
            _check_encodable(value, name)
    _check_settings(item.settings)


def _check_settings(settings) -> None:
    if not isinstance(settings, dict):
        raise UsageError(f"the generation settings must be a mapping of names to values, got {type(settings).__name__}")
    try:
        text = json.dumps(settings, ensure_ascii=False)
    except (TypeError, ValueError):
        raise UsageError("the generation settings must be plain numbers, text and true/false") from None
    _check_encodable(text, "generation settings")
    if len(text) > MAX_SETTINGS_CHARS:
        raise UsageError(f"the generation settings take {len(text):,} characters, over {MAX_SETTINGS_CHARS:,} — "
                         "keep only the settings the answers were made with")


def _check_encodable(text: str, label: str) -> None:
    # a lone surrogate ("\ud800" in JSON) passes every check but makes the feedback file unwritable
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"the {label} holds {text[e.start]!r}, half of a character pair, which no file can store — "
                         "remove it") from None


def feedback_lock(workspace: Path) -> threading.Lock:
    """The lock every change to a workspace's feedback (and the files made from it) holds."""
    return _lock(feedback_file(workspace))


def _lock(path: Path) -> threading.Lock:
    key = path.resolve()
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _read(path: Path) -> list[FeedbackItem]:
    if not path.is_file():
        return []
    return [FeedbackItem.from_json(row) for row in read_jsonl(path)]


def _write(path: Path, items: list[FeedbackItem]) -> None:
    write_jsonl([item.to_json() for item in items], path)
