"""Tests for tuning.qa.parse: hand-written replies models really give, error cases, and fuzzing."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.qa.parse import ParsedPairs, QAParseError, parse_qa_reply

SAMPO = {"question": "Who forged the Sampo?", "answer": "Ilmarinen"}
KANTELE = {"question": "What did Väinämöinen make from a pike's jawbone?", "answer": "A kantele"}
BOTH = [SAMPO, KANTELE]
PLAIN_JSON = ('[{"question": "Who forged the Sampo?", "answer": "Ilmarinen"}, '
              '{"question": "What did Väinämöinen make from a pike\'s jawbone?", "answer": "A kantele"}]')

FIXTURES = {
    "plain json": (PLAIN_JSON, BOTH),
    "think block": ("<think>\nThe user wants two pairs [maybe {more}].\n</think>\n" + PLAIN_JSON, BOTH),
    "unclosed think at the start": ("<think>Let me write the list.\n" + PLAIN_JSON, BOTH),
    "stray closing think": ("okay, two pairs about the Sampo {draft}\n</think>\n\n" + PLAIN_JSON, BOTH),
    "json fence": ("Here you go:\n```json\n" + PLAIN_JSON + "\n```\nEnjoy!", BOTH),
    "plain fence": ("```\n" + PLAIN_JSON + "\n```", BOTH),
    "prose around": ("Sure! Here are 2 pairs [as asked]:\n\n" + PLAIN_JSON + "\n\nLet me know if you need more.", BOTH),
    "trailing commas": (('[{"question": "Who forged the Sampo?", "answer": "Ilmarinen",},\n'
                        ' {"question": "What did Väinämöinen make from a pike\'s jawbone?", "answer": "A kantele"},\n]'),
                        BOTH),
    "python dicts": (("[{'question': 'Who forged the Sampo?', 'answer': 'Ilmarinen'}, "
                     "{'question': \"What did Väinämöinen make from a pike's jawbone?\", 'answer': 'A kantele'}]"),
                     BOTH),
    "truncated array": (PLAIN_JSON[:-1] + ', {"question": "Where is Pohjola?", "ans', BOTH),
    "single object": ('{"question": "Who forged the Sampo?", "answer": "Ilmarinen"}', [SAMPO]),
    "wrapper pairs": ('{"pairs": ' + PLAIN_JSON + "}", BOTH),
    "wrapper qa with other keys": ('{"topic": "Kalevala", "count": 2, "qa": ' + PLAIN_JSON + "}", BOTH),
    "wrapper questions nested": ('{"data": {"questions": ' + PLAIN_JSON + "}}", BOTH),
    "short keys q/a": ('[{"q": "Who forged the Sampo?", "a": "Ilmarinen"}]', [SAMPO]),
    "upper keys Q/A": ('[{"Q": "Who forged the Sampo?", "A": "Ilmarinen"}]', [SAMPO]),
    "prompt/response": ('[{"prompt": "Who forged the Sampo?", "response": "Ilmarinen"}]', [SAMPO]),
    "instruction/output": ('[{"Instruction": "Who forged the Sampo?", "Output": "Ilmarinen"}]', [SAMPO]),
    "instruction with input": (('[{"instruction": "Answer briefly.", "input": "Who forged the Sampo?", '
                               '"output": "Ilmarinen"}]'),
                               [{"question": "Answer briefly.\n\nWho forged the Sampo?", "answer": "Ilmarinen"}]),
    "input/output": ('[{"input": "Who forged the Sampo?", "output": "Ilmarinen"}]', [SAMPO]),
    "query/reply": ('[{"QUERY": "Who forged the Sampo?", "Reply": "Ilmarinen"}]', [SAMPO]),
    "json lines": (('{"question": "Who forged the Sampo?", "answer": "Ilmarinen"}\n'
                   '{"question": "What did Väinämöinen make from a pike\'s jawbone?", "answer": "A kantele"}\n'), BOTH),
    "smart quotes": ("[{“question”: “Who forged the Sampo?”, “answer”: “Ilmarinen”}]", [SAMPO]),
    "numbered Q/A text": (("Here are the pairs:\n\n1. Q: Who forged the Sampo?\n   A: Ilmarinen\n\n"
                          "2. **Q:** What did Väinämöinen make from a pike's jawbone?\n**A:** A kantele\n\nHope it helps!"),
                          BOTH),
    "Question/Answer text multi-line": ("Question 1: Who forged\nthe Sampo?\nAnswer 1: Ilmarinen", [
        {"question": "Who forged\nthe Sampo?", "answer": "Ilmarinen"}]),
    "numbers become text": ('[{"question": "How many runes in the 1849 Kalevala?", "answer": 50}]',
                            [{"question": "How many runes in the 1849 Kalevala?", "answer": "50"}]),
    "whitespace stripped": ('[{"question": "  Who forged the Sampo?\\n", "answer": " Ilmarinen "}]', [SAMPO]),
    "duplicates kept": ("[" + ", ".join(['{"q": "Who forged the Sampo?", "a": "Ilmarinen"}'] * 2) + "]",
                        [SAMPO, SAMPO]),
}


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_replies_give_exact_pairs(name):
    text, expected = FIXTURES[name]
    assert parse_qa_reply(text).pairs == expected


def test_repairs_are_reported():
    assert "removed <think> block" in parse_qa_reply(FIXTURES["think block"][0]).repaired
    assert "removed an unclosed <think> tag" in parse_qa_reply(FIXTURES["unclosed think at the start"][0]).repaired
    assert "removed ``` code fences" in parse_qa_reply(FIXTURES["json fence"][0]).repaired
    assert "removed trailing commas" in parse_qa_reply(FIXTURES["trailing commas"][0]).repaired
    assert any("Python-style" in note for note in parse_qa_reply(FIXTURES["python dicts"][0]).repaired)
    assert "closed a truncated array (kept 2 complete items)" in parse_qa_reply(FIXTURES["truncated array"][0]).repaired
    assert "wrapped a single object in a list" in parse_qa_reply(FIXTURES["single object"][0]).repaired
    assert "unwrapped the list under 'pairs'" in parse_qa_reply(FIXTURES["wrapper pairs"][0]).repaired
    assert any("JSON Lines" in note for note in parse_qa_reply(FIXTURES["json lines"][0]).repaired)
    assert any("smart quotes" in note for note in parse_qa_reply(FIXTURES["smart quotes"][0]).repaired)
    assert any("Q:/A:" in note for note in parse_qa_reply(FIXTURES["numbered Q/A text"][0]).repaired)
    assert parse_qa_reply(PLAIN_JSON).repaired == []


def test_unusable_items_are_skipped_with_reasons():
    text = ('[{"q": "Who forged the Sampo?", "a": "Ilmarinen"}, {"q": "Where is Pohjola?"}, '
            '{"q": "Who is Louhi?", "a": null}, {"q": "Runes?", "a": ["one", "two"]}, "loose text", '
            '{"q": "  ", "a": "x"}, {"q": true, "a": "x"}]')
    result = parse_qa_reply(text)
    assert result.pairs == [SAMPO]
    assert result.skipped[0].startswith("item 2: no answer field (keys: q;")
    assert result.skipped[1:] == ["item 3: answer is null, expected text",
                                  "item 4: answer is a list, expected text",
                                  "item 5: a str, expected an object with question and answer",
                                  "item 6: question is empty",
                                  "item 7: question is true, expected text"]


def test_plain_text_question_without_answer_is_skipped():
    result = parse_qa_reply("Q: Who forged the Sampo?\nA: Ilmarinen\nQ: Where is Pohjola?")
    assert result.pairs == [SAMPO]
    assert result.skipped == ["pair 2: no answer in Q:/A: text"]


def test_smart_quotes_inside_valid_json_are_kept():
    text = '[{"question": "What is “Sampo”?", "answer": "A magic mill"}]'
    assert parse_qa_reply(text).pairs == [{"question": "What is “Sampo”?", "answer": "A magic mill"}]


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_reply_is_an_error(text):
    with pytest.raises(QAParseError, match="empty"):
        parse_qa_reply(text)


@pytest.mark.parametrize("text, fragment", [
    ("<think>I cannot decide.</think>", "only a <think> block"),
    ("I'm sorry, I can't help with that.", "found no JSON list"),
    ('[{"question": "Where is Pohjola?"}]', "no answer field"),
    ('{"notes": "nothing here"}', "no question field"),
    ('[{"question": "Who forged', "found no JSON list"),
    ("[1, 2, 3]", "found no JSON list"),
    (None, "expected the reply as text"),
])
def test_unusable_replies_raise_errors_that_say_what_was_found(text, fragment):
    with pytest.raises(QAParseError, match=fragment) as caught:
        parse_qa_reply(text)
    if text is not None and text.strip():
        assert "expected a JSON list" in str(caught.value) or "expected the reply" in str(caught.value)


def test_error_is_a_value_error():
    assert issubclass(QAParseError, ValueError)


def test_huge_hex_number_is_skipped_not_crashed():
    result = parse_qa_reply("[{'q': 'Big?', 'a': 0x" + "f" * 5000 + "}, {'q': 'Who forged the Sampo?', 'a': 'Ilmarinen'}]")
    assert result.pairs == [SAMPO]
    assert result.skipped == ["item 1: answer is a number too long to write out"]


def test_deep_nesting_does_not_crash():
    text = "[" * 5000 + '{"q": "x", "a": "y"}' + "]" * 5000
    check_outcome(text)


@pytest.mark.parametrize("garbage", ["[{" * 5000, "x [y " * 5000, '{"q": "a' + "[" * 5000])
def test_bracket_heavy_garbage_is_fast(garbage):
    started = time.perf_counter()
    check_outcome(garbage)
    assert time.perf_counter() - started < 2  # each bracket is scanned about once; quadratic scanning took ~5 s


FRAGMENTS = ['[', ']', '{', '}', '"q"', ':', ',', '"a"', "'x'", '```json', '<think>', ' ', 'Q:', 'A:', '\n']


def check_outcome(text):
    """The only allowed outcomes: usable pairs, or QAParseError."""
    try:
        result = parse_qa_reply(text)
    except QAParseError:
        return
    assert isinstance(result, ParsedPairs)
    assert result.pairs
    for pair in result.pairs:
        assert set(pair) == {"question", "answer"}
        assert isinstance(pair["question"], str) and pair["question"]
        assert isinstance(pair["answer"], str) and pair["answer"]


@settings(max_examples=2000, deadline=None)
@given(st.text())
def test_arbitrary_text_gives_pairs_or_parse_error(text):
    check_outcome(text)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS)).map("".join))
def test_json_ish_garbage_gives_pairs_or_parse_error(text):
    check_outcome(text)
