"""Reading an LLM judge's scores from messy replies."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.qa.judge import Judgement, parse_judge_reply


@pytest.mark.parametrize("reply, expected", [
    ('[{"id": 1, "score": 8, "reason": "ok"}, {"id": 2, "score": 4, "reason": "vague"}]',
     {1: Judgement(8, "ok"), 2: Judgement(4, "vague")}),
    ('<think>hmm</think>```json\n[{"score": "7/10", "reason": "fine"}]\n```', {1: Judgement(7, "fine")}),
    ('{"scores": [{"pair": "2", "rating": 6.6, "explanation": "partly"}]}', {2: Judgement(7, "partly")}),
    ('[{"id": 1, "score": 8, "reason": "ok"}, {"id": 2, "score": ', {1: Judgement(8, "ok")}),  # cut off
    ("1. 9/10 - correct\n2. 2/10 - invented", {1: Judgement(9, "correct"), 2: Judgement(2, "invented")}),
    ('[{"id": 1, "score": 42}, {"id": 7, "score": 5}]', {}),  # out of range score, unknown pair
    ("Looks good!", {}),
])
def test_judge_replies(reply, expected):
    assert parse_judge_reply(reply, count=2) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=20))
def test_any_reply_gives_only_valid_judgements(reply, count):
    found = parse_judge_reply(reply, count)
    assert all(1 <= number <= count and 1 <= j.score <= 10 for number, j in found.items())
