"""Scorecard metrics on hand-made answer pairs with known values, and the verdict logic."""

import pytest

from tuning.chat.scorecard import (
    LEARNED,
    MAX_ANSWER_TOKENS,
    MIN_ANSWER_TOKENS,
    REGRESSED,
    UNCHANGED_RIGHT,
    UNCHANGED_WRONG,
    answer_budget,
    bleu,
    exact_match,
    has_key_facts,
    questions_phrase,
    rouge_l,
    sample_examples,
    score_answer,
    summarize,
    token_f1,
    verdict,
)


def test_key_facts_ignore_case_and_accents():
    assert has_key_facts("It was elias LONNROT.", ["Lönnrot"])
    assert has_key_facts("Lönnrot, in 1835.", ["Lönnrot", "1835"])
    assert not has_key_facts("Lönnrot, in 1849.", ["Lönnrot", "1835"])
    assert has_key_facts("anything", []) is None


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The Sampo!", "sampo") == 1.0
    assert exact_match("A mill", "The Sampo") == 0.0


def test_token_f1_known_value():
    # answer tokens: elias lonnrot compiled it ; reference: elias lonnrot -> P=2/4, R=2/2, F1=2/3
    assert token_f1("Elias Lönnrot compiled it", "Elias Lönnrot") == pytest.approx(2 / 3)
    assert token_f1("", "x") == 0.0 and token_f1("same words", "same words") == 1.0


def test_rouge_l_and_bleu_known_values():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    # LCS "the cat the mat" = 4 tokens of 6 and 6: F = 4/6
    assert rouge_l("the cat sat on the mat", "the cat lay by the mat") == pytest.approx(4 / 6)
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("completely different words", "the cat sat on the mat") < 0.05


@pytest.mark.parametrize(
    ("base", "tuned", "expected"),
    [("Somebody else.", "Elias Lönnrot.", LEARNED), ("Elias Lönnrot.", "Somebody else.", REGRESSED),
     ("Lönnrot.", "Lönnrot did.", UNCHANGED_RIGHT), ("A poet.", "A doctor.", UNCHANGED_WRONG)],
)
def test_verdicts(base, tuned, expected):
    reference = "Elias Lönnrot compiled it."
    assert verdict(score_answer(base, reference, ["Lönnrot"]), score_answer(tuned, reference, ["Lönnrot"])) == expected


def test_summary_means_deltas_and_counts():
    rows = []
    for base, tuned in [("no", "Lönnrot"), ("Lönnrot", "Lönnrot")]:
        b, t = score_answer(base, "Lönnrot", ["Lönnrot"]), score_answer(tuned, "Lönnrot", ["Lönnrot"])
        rows.append({"base_scores": b, "tuned_scores": t, "verdict": verdict(b, t)})
    summary = summarize(rows)
    assert summary["metrics"]["key_fact"] == {"base": 0.5, "tuned": 1.0, "delta": 0.5}
    assert summary["verdicts"] == {LEARNED: 1, REGRESSED: 0, UNCHANGED_RIGHT: 1, UNCHANGED_WRONG: 0}


def test_answer_budget_is_twice_the_longest_reference_within_bounds():
    from tuning.models.loading import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("embedded").path)
    longest = "Elias Lönnrot, a country doctor, compiled the Kalevala from poems sung in Karelia."
    length = len(tokenizer(longest, add_special_tokens=False).input_ids)
    assert MIN_ANSWER_TOKENS < 2 * length < MAX_ANSWER_TOKENS
    assert answer_budget(tokenizer, ["Yes.", longest]) == 2 * length
    assert answer_budget(tokenizer, ["Yes."]) == MIN_ANSWER_TOKENS
    assert answer_budget(tokenizer, [longest * 10]) == MAX_ANSWER_TOKENS


def test_a_sampled_scorecard_is_seeded_in_file_order_and_says_of_how_many():
    examples = [{"prompt": f"q{i}"} for i in range(58)]
    sample = sample_examples(examples, 8, seed=42)
    assert len(sample) == 8 and len({e["prompt"] for e in sample}) == 8
    assert sample == sorted(sample, key=examples.index), "file order kept"
    assert sample == sample_examples(examples, 8, seed=42), "a rerun scores the same questions"
    assert sample != sample_examples(examples, 8, seed=7)
    assert sample != examples[:8], "spread over the file, not its head"
    assert sample_examples(examples, 0, 42) == examples and sample_examples(examples, 99, 42) == examples
    assert questions_phrase({"questions": 8, "held_out": 58}) == "8 of 58 held-out questions"
    assert questions_phrase({"questions": 58, "held_out": 58}) == "58 held-out questions"
    assert questions_phrase({"questions": 2}) == "2 held-out questions", "eval.json written before sampling"
