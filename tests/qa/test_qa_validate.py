"""Checks on generated pairs: duplicates, grounding, question form — on hand-made cases."""

import pytest

from tuning.qa.validate import (
    NOT_A_QUESTION,
    NOT_SELF_CONTAINED,
    TOO_LONG,
    TOO_SHORT,
    DuplicateIndex,
    ValidationSettings,
    form_flags,
    grounding_score,
    looks_like_question,
)

CHUNK = ("Elias Lönnrot was born on 9 April 1802 in Sammatti. He qualified as a doctor of medicine in 1832 "
         "and collected folk poems in Karelia on eleven journeys.")


@pytest.mark.parametrize("answer, low, high", [
    ("He was born in Sammatti in 1802.", 1.0, 1.0),
    ("Lonnrot was born in Sammatti.", 1.0, 1.0),  # accents folded
    ("He collected poems on journeys to Karelia.", 1.0, 1.0),  # "collected"/"collecting" share a stem
    ("He was a famous Swedish admiral who sailed to Brazil.", 0.0, 0.3),  # not in the text
    ("Yes.", 1.0, 1.0),  # nothing to check
    ("He was born in Sammatti and later became king of Sweden.", 0.3, 0.6),  # half made up
])
def test_grounding_is_the_share_of_answer_words_in_the_chunk(answer, low, high):
    assert low <= grounding_score(answer, CHUNK) <= high


@pytest.mark.parametrize("question, expected", [
    ("Who compiled the Kalevala?", True),
    ("When was Lönnrot born", True),  # question word, missing '?'
    ("Explain how the Kalevala was collected.", True),
    ("Name the smith who forged the Sampo.", True),
    ("The Kalevala has fifty poems.", False),
    ("Lönnrot.", False),
])
def test_question_form(question, expected):
    assert looks_like_question(question) is expected


def test_form_flags_name_each_problem():
    settings = ValidationSettings()
    assert form_flags("Who forged the Sampo?", "Ilmarinen.", settings) == []
    assert TOO_SHORT in form_flags("Who?", "Ilmarinen.", settings)
    assert TOO_LONG in form_flags("Who forged the Sampo?", "x" * 5000, settings)
    assert NOT_A_QUESTION in form_flags("The Sampo is a mill.", "Yes.", settings)
    for vague in ("According to the text, who forged the Sampo?", "What does the text say?",
                  "What is the story behind this article?", "Who does the author praise?"):
        assert NOT_SELF_CONTAINED in form_flags(vague, "Ilmarinen.", settings), vague


def test_exact_copies_match_after_folding_case_accents_and_punctuation():
    index = DuplicateIndex(["Who compiled the Kalevala?"])
    assert index.find("who compiled the KALEVALA") == ("Who compiled the Kalevala?", 1.0)
    index.add("Where was Lönnrot born?")
    assert index.find("Where was Lonnrot born?!")[1] == 1.0


@pytest.mark.parametrize("question", [
    "Who compiled the Kalevala epic?",
    "Who compiled Kalevala?",
    "Who compiled the Kalevala poem?",
])
def test_near_copies_are_duplicates(question):
    index = DuplicateIndex(["Who compiled the Kalevala?"], threshold=0.7)
    match = index.find(question)
    assert match and match[0] == "Who compiled the Kalevala?" and 0.7 <= match[1] < 1.0


@pytest.mark.parametrize("question", [
    "Who forged the Sampo?",
    "When was the Kalevala first published?",
    "What is Kalevala Day?",
])
def test_different_questions_are_not_duplicates(question):
    assert DuplicateIndex(["Who compiled the Kalevala?"], threshold=0.7).find(question) is None


def test_the_threshold_decides():
    pair = ("Who compiled the Kalevala?", "Who compiled the Finnish Kalevala?")
    strict, loose = DuplicateIndex([pair[0]], threshold=0.95), DuplicateIndex([pair[0]], threshold=0.5)
    assert strict.find(pair[1]) is None
    assert loose.find(pair[1]) is not None


def test_index_scales_to_a_real_dataset():
    import json

    from helpers import KALEVALA

    questions = [json.loads(line)["prompt"] for line in (KALEVALA / "train.jsonl").open(encoding="utf-8")]
    index = DuplicateIndex(questions, threshold=0.8)
    assert len(index) == len(questions)
    assert all(index.find(q) for q in questions[:50])
