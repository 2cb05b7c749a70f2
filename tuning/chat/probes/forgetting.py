"""The forgetting probe: general questions outside any domain, asked of base and tuned, counted only where the base
was right ("general skills kept: 27 of the 29 the base knew"). The set ships as datasets/general/skills.jsonl; its
data card there describes the rules, which live here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tuning.chat.scorecard import fold
from tuning.errors import UsageError

GENERAL_SKILLS_FILE = Path(__file__).resolve().parents[3] / "datasets" / "general" / "skills.jsonl"
RULES = ("contains", "number", "one_word")
SHAPE = '{"question": "...", "answers": ["..."], "rule": "contains" | "number" | "one_word"}'
T = TypeVar("T")
_PUNCTUATION = re.compile(r"[^\w\s-]+")


class ProbeSetError(UsageError):
    """A probe file that can't be used: names the file, the row and the fix."""


@dataclass(frozen=True)
class ProbeQuestion:
    question: str
    answers: tuple[str, ...]
    rule: str = "contains"
    skill: str | None = None


@dataclass(frozen=True)
class Verdict:
    correct: bool
    rule: str
    why: str  # the rule's reason, shown where the verdict is decided


@dataclass
class ForgettingReport:
    """Base vs tuned on the questions the base answered correctly."""

    known: int  # questions the base got right
    asked: int
    lost: list[dict] = field(default_factory=list)  # {question, base, tuned, why}

    @property
    def kept(self) -> int:
        return self.known - len(self.lost)

    def summary(self) -> str:
        if not self.known:
            return f"general skills kept: the base knew none of the {self.asked} questions, so nothing to keep"
        return f"general skills kept: {self.kept} of the {self.known} the base knew"

    def to_json(self) -> dict:
        return {"asked": self.asked, "known_by_base": self.known, "kept": self.kept, "lost": self.lost,
                "summary": self.summary()}


def read_probe_rows(path: str | Path, shape: str, parse_row: Callable[[str, int, str], T]) -> list[T]:
    """Each non-blank line of a probe file as parse_row(file name, row number, line) makes it; ProbeSetError for a
    missing or empty file, naming the shape its lines should have."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise ProbeSetError(f"{path.name}: no such probe file -- give a JSONL file of {shape}") from None
    rows = [parse_row(path.name, number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise ProbeSetError(f"{path.name}: the probe set is empty -- add lines of {shape}, or switch the probe off")
    return rows


def load_probe_set(path: str | Path = GENERAL_SKILLS_FILE) -> list[ProbeQuestion]:
    """The probe questions of a JSONL file; ProbeSetError naming the row and the fix for a wrong shape."""
    return read_probe_rows(path, SHAPE, _probe_question)


def _probe_question(name: str, number: int, line: str) -> ProbeQuestion:
    where = f"{name} row {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProbeSetError(f"{where}: not JSON ({exc.msg}) -- each line is one object: {SHAPE}") from None
    if not isinstance(row, dict):
        raise ProbeSetError(f"{where}: expected an object like {SHAPE}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ProbeSetError(f"{where}: 'question' is missing or empty -- write the question to ask")
    answers = row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ProbeSetError(f"{where}: 'answers' should be a list of accepted answers, e.g. [\"Paris\"]")
    rule = row.get("rule", "contains")
    if rule not in RULES:
        raise ProbeSetError(f"{where}: rule {rule!r} -- use one of {', '.join(RULES)}")
    skill = row.get("skill")
    return ProbeQuestion(question.strip(), tuple(a.strip() for a in answers), rule,
                         skill if isinstance(skill, str) else None)


def _words(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", fold(text)).split())


def _has_words(reply: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(_words(phrase))}(?![\w-])", _words(reply)) is not None


def judge(reply: str, probe: ProbeQuestion) -> Verdict:
    """Whether a reply answers a probe question, by its rule (see datasets/general/README.md)."""
    if probe.rule == "one_word":
        words = _words(reply).split()
        if len(words) != 1:
            return Verdict(False, "one_word", f"asked for one word, got {len(words)}")
        right = any(words[0] == _words(answer) for answer in probe.answers)
        return Verdict(right, "one_word", "one word, an accepted answer" if right else "one word, not an accepted answer")
    right = any(_has_words(reply, answer) for answer in probe.answers)
    what = "number" if probe.rule == "number" else "accepted answer"
    return Verdict(right, probe.rule, f"the {what} appears as a whole word" if right else f"no {what} in the reply")


def forgetting_report(probes: list[ProbeQuestion], base_replies: list[str], tuned_replies: list[str]) -> ForgettingReport:
    """Base vs tuned, counted on the questions the base got right; every lost one with both replies."""
    if not (len(probes) == len(base_replies) == len(tuned_replies)):
        raise ValueError("one base and one tuned reply per probe question")
    report = ForgettingReport(known=0, asked=len(probes))
    for probe, base, tuned in zip(probes, base_replies, tuned_replies):
        if not judge(base, probe).correct:
            continue
        report.known += 1
        after = judge(tuned, probe)
        if not after.correct:
            report.lost.append({"question": probe.question, "base": base, "tuned": tuned, "rule": after.rule,
                                "why": after.why})
    return report
