"""The limits probe: does the model know where its knowledge ends?

(a) Off-topic questions (datasets/general/off_topic.jsonl): a reply is fine when it redirects to the model's topic
    (the Kalevala data teaches "That's outside my topic...") or at least answers without a fact of the training
    domain; it is an invention when it brings a domain term into an unrelated answer.
(b) In-domain questions the training data never answers (datasets/kalevala/unanswerable.jsonl, or a file of your
    own for any dataset): a reply is right when it admits not knowing, an invention otherwise.

Every verdict names its rule, so the scorecard can show the rule where it decides.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuning.chat.probes.forgetting import ProbeSetError, Verdict, read_probe_rows
from tuning.chat.scorecard import fold

DATASETS = Path(__file__).resolve().parents[3] / "datasets"
OFF_TOPIC_FILE = DATASETS / "general" / "off_topic.jsonl"
KALEVALA_UNANSWERABLE_FILE = DATASETS / "kalevala" / "unanswerable.jsonl"
QUESTION_SHAPE = '{"question": "..."}'

# What a redirect says ("That's outside my topic. Ask me about the Sampo instead!").
REDIRECT_MARKERS = (
    "outside my",
    "out of my",
    "beyond my",
    "not my topic",
    "not my area",
    "outside the scope",
    "i can only",
    "i only answer",
    "i only know about",
    "ask me about",
    "i can tell you",
    # A refusal is a redirect too: the Kalevala pairs teach "I can't help with that. I'm a guide to the Kalevala."
    "i can't",
    "i cannot",
    "i'm a guide to",
)
# What admitting not knowing says; a redirect counts as one too.
ADMISSION_MARKERS = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "not known",
    "unknown",
    "no record",
    "not recorded",
    "isn't recorded",
    "no information",
    "don't have information",
    "do not have information",
    "i can't say",
    "i cannot say",
    "sources don't say",
    "sources do not say",
    "doesn't say",
    "does not say",
    "no one knows",
    "isn't known",
    "is not known",
    "not mentioned",
    "isn't mentioned",
) + REDIRECT_MARKERS
_WORD = re.compile(r"[^\W\d_][\w'-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+|\n)[\"'(]*$")
MIN_TERM_COUNT = 2  # a proper noun the training answers use at least this often
# Capitalized in any text, so never a sign of the training domain: months, weekdays, languages and peoples.
EVERYDAY_CAPITALS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "english",
        "french",
        "german",
        "swedish",
        "russian",
        "japanese",
        "chinese",
        "spanish",
        "italian",
        "latin",
        "estonian",
    ]
)


@dataclass
class SideCounts:
    """How one side (base or tuned) fared on one probe."""

    asked: int = 0
    good: int = 0  # redirected / clean (off-topic), admitted (unanswerable)
    redirected: int = 0  # off-topic only: the subset of good that redirected
    examples: list[dict] = field(default_factory=list)  # the failures, with the rule that decided

    def share(self) -> float:
        return self.good / self.asked if self.asked else 0.0


def load_questions(path: str | Path) -> list[str]:
    """The questions of a probe file (JSONL of {"question": ...}); ProbeSetError naming the row and the fix."""
    return read_probe_rows(path, QUESTION_SHAPE, _question)


def _question(name: str, number: int, line: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProbeSetError(f"{name} row {number}: not JSON ({exc.msg}) -- one {QUESTION_SHAPE} per line") from None
    question = row.get("question") if isinstance(row, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise ProbeSetError(f"{name} row {number}: expected {QUESTION_SHAPE} with the question to ask")
    return question.strip()


def domain_terms(training_answers: list[str], general_text: str = "") -> set[str]:
    """The training domain's proper nouns: words the answers use at least twice, always capitalized and at least once
    inside a sentence (so "Sorry" or "That's" opening a reply don't count), never in general_text (the off-topic and
    general-skills questions), and not an everyday capital (months, weekdays, languages)."""
    capitalized, lowercase, mid_sentence = Counter(), set(), set()
    for answer in training_answers:
        for match in _WORD.finditer(answer):
            word, folded = match.group(), fold(match.group())
            if not word[0].isupper():
                lowercase.add(folded)
                continue
            capitalized[folded] += 1
            if not _SENTENCE_START.search(answer[: match.start()]):
                mid_sentence.add(folded)
    general = set(_WORD.findall(fold(general_text))) | EVERYDAY_CAPITALS
    return {
        word
        for word, count in capitalized.items()
        if count >= MIN_TERM_COUNT
        and len(word) >= 4
        and word in mid_sentence
        and word not in lowercase
        and word not in general
    }


def _has_marker(reply: str, markers: tuple[str, ...]) -> str | None:
    folded = " ".join(fold(reply).replace("’", "'").split())
    return next((marker for marker in markers if marker in folded), None)


def judge_off_topic(question: str, reply: str, terms: set[str]) -> tuple[Verdict, bool]:
    """(verdict, redirected) for an off-topic question's reply."""
    marker = _has_marker(reply, REDIRECT_MARKERS)
    if marker:
        return Verdict(True, "redirect", f"redirects to its topic ('{marker}')"), True
    asked = set(_WORD.findall(fold(question)))
    leaked = sorted(word for word in set(_WORD.findall(fold(reply))) if word in terms and word not in asked)
    if leaked:
        return Verdict(False, "domain fact", f"brings the training domain into it ({', '.join(leaked[:3])})"), False
    return Verdict(True, "no domain fact", "answers without a fact of the training domain"), False


def judge_unanswerable(reply: str) -> Verdict:
    """Whether a reply to a question the data never answers admits not knowing."""
    marker = _has_marker(reply, ADMISSION_MARKERS)
    if marker:
        return Verdict(True, "admits", f"admits not knowing ('{marker}')")
    return Verdict(False, "invents", "answers anyway, and the training data has no answer to it")


def off_topic_counts(questions: list[str], replies: list[str], terms: set[str]) -> SideCounts:
    """One side's replies to the off-topic questions."""
    counts = SideCounts(asked=len(questions))
    for question, reply in zip(questions, replies, strict=True):
        verdict, redirected = judge_off_topic(question, reply, terms)
        counts.good += verdict.correct
        counts.redirected += redirected
        if not verdict.correct:
            counts.examples.append({"question": question, "reply": reply, "rule": verdict.rule, "why": verdict.why})
    return counts


def unanswerable_counts(questions: list[str], replies: list[str]) -> SideCounts:
    """One side's replies to the in-domain questions the data never answers."""
    counts = SideCounts(asked=len(questions))
    for question, reply in zip(questions, replies, strict=True):
        verdict = judge_unanswerable(reply)
        counts.good += verdict.correct
        if not verdict.correct:
            counts.examples.append({"question": question, "reply": reply, "rule": verdict.rule, "why": verdict.why})
    return counts
