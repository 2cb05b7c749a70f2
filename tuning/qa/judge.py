"""Read an LLM judge's reply: a 1-10 score and a reason for each numbered pair."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuning.qa.parse import collect_values, gather_items, lower_keys, strip_thinking

MIN_SCORE, MAX_SCORE = 1, 10
SCORE_LINE = re.compile(r"^\s*(?:pair\s*)?(\d+)\s*[.):-]\s*(?:score\s*[:=]?\s*)?(\d{1,2})(?:\s*/\s*10)?\s*[-:,.]?\s*(.*)$",
                        re.IGNORECASE | re.MULTILINE)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Judgement:
    """One pair's score (1-10) and the judge's reason."""

    score: int
    reason: str


def parse_judge_reply(text: str, count: int) -> dict[int, Judgement]:
    """Judgements by pair number (1..count) from JSON items or "3. 7/10 - reason" lines; unreadable ones are absent."""
    body, _ = strip_thinking(text or "")
    values, _ = collect_values(body)
    items, _ = gather_items(values)
    found: dict[int, Judgement] = {}
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            continue
        fields = lower_keys(item)
        score = _read_score(fields.get("score", fields.get("rating")))
        label = fields.get("id", fields.get("pair", position))  # a numbered item must name a pair we asked about
        number = _read_number(label, count)
        if score is not None and number is not None:
            found.setdefault(number, Judgement(score, str(fields.get("reason") or fields.get("explanation") or "").strip()))
    if not found:
        for match in SCORE_LINE.finditer(body):
            number, score = int(match.group(1)), _read_score(match.group(2))
            if score is not None and 1 <= number <= count:
                found.setdefault(number, Judgement(score, match.group(3).strip()))
    return found


def _read_score(value: object) -> int | None:
    """A 1-10 score from 8, 8.5, "8", "8/10"; None when there is none or it is out of range."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = NUMBER.search(str(value))
        if not match:
            return None
        number = float(match.group())
    return round(number) if MIN_SCORE <= number <= MAX_SCORE else None


def _read_number(value: object, count: int) -> int | None:
    """A pair number 1..count from 3, "3", "pair 3"; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    match = NUMBER.search(str(value))
    number = int(float(match.group())) if match else None
    return number if number is not None and 1 <= number <= count else None
