"""Checks on generated question/answer pairs: form, length, grounding in the source, duplicates."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from tuning.data.examples import fold_text

# Flags a reviewer sees; a flagged pair is kept for review, not dropped.
TOO_SHORT, TOO_LONG = "too short", "too long"
NOT_A_QUESTION = "not a question or instruction"
NOT_SELF_CONTAINED = "refers to 'the text'"
WEAKLY_GROUNDED = "weakly grounded"
LOW_JUDGE_SCORE = "low judge score"
# Reasons a pair is removed (written to the rejected file with the reason, never silently).
EMPTY, DUPLICATE = "empty", "duplicate"

QUESTION_WORDS = {"who", "whom", "whose", "what", "when", "where", "why", "how", "which", "is", "are", "was",
                  "were", "do", "does", "did", "can", "could", "should", "would", "will", "has", "have", "had"}
INSTRUCTION_VERBS = {"explain", "describe", "list", "name", "give", "tell", "summarize", "summarise", "compare",
                     "define", "state", "identify", "outline", "write", "translate", "suggest", "recommend",
                     "show", "find", "provide", "recite", "mention", "please"}
# A question that points at "the text" can't be asked without it: a chat user never has the passage.
TEXT_REFERENCES = re.compile(r"\b(the|this) (text|passage|excerpt|document|article|paragraph|section)\b|"
                             r"\bthe author\b", re.IGNORECASE)
STOPWORDS = {
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from", "had", "has", "have", "he",
    "her", "his", "i", "in", "into", "is", "it", "its", "of", "on", "or", "she", "that", "the", "their",
    "them", "they", "this", "to", "was", "were", "which", "who", "whom", "with", "what", "when", "where",
    "why", "how", "did", "does", "do", "not", "no", "yes", "also", "than", "then", "there", "these", "those",
    "one", "can", "could", "would", "should", "will", "about", "after", "before", "over", "under", "our",
    "your", "you", "we", "us",
}
WORD = re.compile(r"\w+")
NGRAM = 3  # character trigrams: robust to word order and small edits, cheap to compute
STEM_CHARS = 5  # "collected" ~ "collecting": words sharing their first 5 letters count as the same word


@dataclass
class ValidationSettings:
    """Bounds and thresholds; the app exposes the duplicate threshold and judge cut-off as sliders."""

    min_question_chars: int = 8
    max_question_chars: int = 300
    min_answer_chars: int = 1
    max_answer_chars: int = 1200
    min_grounding: float = 0.5  # share of the answer's content words found in the chunk
    duplicate_similarity: float = 0.8  # trigram Jaccard of normalized questions at or above: a duplicate
    min_judge_score: int = 6  # 1-10; below: flagged


def normalize(text: str) -> str:
    """Case, accents, width, punctuation and spacing folded away."""
    decomposed = unicodedata.normalize("NFKD", fold_text(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def content_words(text: str) -> list[str]:
    """Words that carry meaning: numbers, and words of 3+ letters that are not stopwords."""
    return [w for w in WORD.findall(normalize(text)) if w.isdigit() or (len(w) >= 3 and w not in STOPWORDS)]


def grounding_score(answer: str, chunk_text: str) -> float:
    """Share of the answer's content words that occur in the chunk (1.0 when it has none to check)."""
    words = content_words(answer)
    if not words:
        return 1.0
    chunk_words = set(content_words(chunk_text))
    stems = {w[:STEM_CHARS] for w in chunk_words if len(w) > STEM_CHARS}
    found = sum(1 for w in words if w in chunk_words or (len(w) > STEM_CHARS and w[:STEM_CHARS] in stems))
    return found / len(words)


def form_flags(question: str, answer: str, settings: ValidationSettings) -> list[str]:
    """Length and question-form problems of one pair."""
    flags = []
    if len(question) < settings.min_question_chars or len(answer) < settings.min_answer_chars:
        flags.append(TOO_SHORT)
    if len(question) > settings.max_question_chars or len(answer) > settings.max_answer_chars:
        flags.append(TOO_LONG)
    if not looks_like_question(question):
        flags.append(NOT_A_QUESTION)
    if TEXT_REFERENCES.search(question):
        flags.append(NOT_SELF_CONTAINED)
    return flags


def looks_like_question(text: str) -> bool:
    """Ends with '?', or opens with a question word or an instruction verb ("Explain ...")."""
    if text.rstrip().endswith("?"):
        return True
    words = WORD.findall(normalize(text))
    return bool(words) and (words[0] in QUESTION_WORDS or words[0] in INSTRUCTION_VERBS)


def trigrams(text: str) -> frozenset[str]:
    """Character trigrams of the normalized text (the text itself when shorter)."""
    folded = " ".join(WORD.findall(normalize(text)))
    if len(folded) <= NGRAM:
        return frozenset([folded])
    return frozenset(folded[i : i + NGRAM] for i in range(len(folded) - NGRAM + 1))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two trigram sets."""
    return len(a & b) / len(a | b) if a or b else 1.0


class DuplicateIndex:
    """Questions seen so far (the existing dataset and every kept pair); finds exact and near copies."""

    def __init__(self, questions: list[str] = (), threshold: float = ValidationSettings.duplicate_similarity):
        self.threshold = threshold
        self._exact: dict[str, str] = {}
        self._grams: list[tuple[frozenset[str], str]] = []
        self._by_gram: dict[str, list[int]] = {}
        for question in questions:
            self.add(question)

    def find(self, question: str) -> tuple[str, float] | None:
        """(the earlier question, similarity) when this one copies or nearly copies it, else None."""
        key = normalize(question)
        if key in self._exact:
            return self._exact[key], 1.0
        grams = trigrams(question)
        # Only questions sharing a trigram can reach the threshold: look at those, not the whole set.
        candidates = {i for gram in grams for i in self._by_gram.get(gram, ())}
        best = max(((similarity(grams, self._grams[i][0]), i) for i in candidates), default=(0.0, -1))
        if best[0] >= self.threshold:
            return self._grams[best[1]][1], best[0]
        return None

    def add(self, question: str) -> None:
        """Remember a kept question."""
        self._exact.setdefault(normalize(question), question)
        grams = trigrams(question)
        for gram in grams:
            self._by_gram.setdefault(gram, []).append(len(self._grams))
        self._grams.append((grams, question))

    def __len__(self) -> int:
        return len(self._grams)
