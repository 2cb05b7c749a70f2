"""The forgetting probe's set and scoring rules, against hand-written replies, right and wrong."""

import json

import pytest

from tuning.chat.probes.forgetting import (
    GENERAL_SKILLS_FILE,
    ProbeQuestion,
    ProbeSetError,
    forgetting_report,
    judge,
    load_probe_set,
)

PARIS = ProbeQuestion("What is the capital of France?", ("Paris",), "contains")
ROME = ProbeQuestion("What is the capital of Italy?", ("Rome",), "contains")
TWELVE = ProbeQuestion("What is 7 + 5?", ("12", "twelve"), "number")
ONE_WORD = ProbeQuestion("Answer in one word: what color is grass?", ("green",), "one_word")


def test_the_shipped_set_has_sixty_questions_in_four_skills_each_with_a_rule():
    probes = load_probe_set()
    assert len(probes) == 60 and len({p.question for p in probes}) == 60
    assert {p.skill for p in probes} == {"arithmetic", "capitals", "everyday facts", "following instructions"}
    assert (GENERAL_SKILLS_FILE.parent / "README.md").is_file()  # its data card


@pytest.mark.parametrize(("reply", "probe", "right"), [
    ("The capital of France is Paris.", PARIS, True),
    ("PARIS", PARIS, True),
    ("It is Lyon.", PARIS, False),
    ("Romeo and Juliet is set in Verona.", ROME, False),  # a whole word, not a piece of one
    ("Rome, of course.", ROME, True),
    ("7 + 5 = 12", TWELVE, True),
    ("The answer is twelve.", TWELVE, True),
    ("It is 112.", TWELVE, False),
    ("It is 13.", TWELVE, False),
    ("Green.", ONE_WORD, True),
    ("green", ONE_WORD, True),
    ("Grass is green.", ONE_WORD, False),  # right fact, instruction not followed
    ("Blue.", ONE_WORD, False),
])
def test_rules_against_hand_written_replies(reply, probe, right):
    verdict = judge(reply, probe)
    assert verdict.correct is right and verdict.rule == probe.rule and verdict.why


def test_only_what_the_base_knew_counts_and_every_loss_is_listed_with_both_replies():
    probes = [PARIS, ROME, TWELVE, ONE_WORD]
    base = ["Paris.", "I think Milan.", "12", "Green."]  # the base knew 3 of 4
    tuned = ["Paris is the capital.", "Rome.", "Väinämöinen sang 12 songs... no, 13", "The grass is green."]
    report = forgetting_report(probes, base, tuned)
    assert report.summary() == "general skills kept: 2 of the 3 the base knew"
    assert report.to_json()["kept"] == 2 and report.to_json()["known_by_base"] == 3
    [lost] = report.lost
    assert lost["question"] == ONE_WORD.question and lost["base"] == "Green." and lost["tuned"] == "The grass is green."
    assert lost["rule"] == "one_word" and "one word" in lost["why"]


def test_a_base_that_knew_nothing_is_said_plainly():
    report = forgetting_report([PARIS], ["Lyon"], ["Paris"])
    assert report.summary() == "general skills kept: the base knew none of the 1 questions, so nothing to keep"


@pytest.mark.parametrize(("content", "message"), [
    ("", "the probe set is empty -- add lines"),
    ('{"question": "Q?", "answers": ["a"]}\nnot json\n', "row 2: not JSON"),
    ('["a list"]\n', "row 1: expected an object"),
    ('{"answers": ["a"]}\n', "row 1: 'question' is missing"),
    ('{"question": "Q?", "answers": []}\n', "row 1: 'answers' should be a list"),
    ('{"question": "Q?", "answers": ["a"], "rule": "regex"}\n', "row 1: rule 'regex' -- use one of contains"),
])
def test_a_probe_file_of_the_wrong_shape_names_the_row_and_the_fix(tmp_path, content, message):
    path = tmp_path / "probes.jsonl"
    path.write_text(content)
    with pytest.raises(ProbeSetError, match=message.replace("(", r"\(")):
        load_probe_set(path)


def test_a_missing_probe_file_and_a_single_answer_string(tmp_path):
    with pytest.raises(ProbeSetError, match="no such probe file"):
        load_probe_set(tmp_path / "absent.jsonl")
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"question": "Capital of Japan?", "answers": "Tokyo"}) + "\n")
    assert load_probe_set(path) == [ProbeQuestion("Capital of Japan?", ("Tokyo",), "contains", None)]


def test_the_train_tabs_scorecard_lists_the_probes_inert():
    from tuning.runs.run import Scorecard
    from ui.scorecard import summary_markdown

    report = {"summary": {"questions": 1, "metrics": {"key_fact": {"base": 0.0, "tuned": 1.0, "delta": 1.0}},
                          "verdicts": {"learned": 1}},
              "questions": [{"question": "Q?", "reference": "A", "base": "b", "tuned": "A", "verdict": "learned"}],
              "probes": {"forgetting": {"summary": "general skills kept: 2 of the 3 the base knew ![x](http://evil)"},
                         "memorised": {"summary": "key facts asked as trained 2/2, as held-out paraphrases 1/2"}}}
    text = summary_markdown(Scorecard.from_report(report))
    assert "Beyond the held-out questions" in text and "general skills kept: 2 of the 3" in text
    assert "![x](http://evil)" not in text  # an imported report's text renders without images
    damaged = Scorecard.from_report({**report, "probes": {"limits": {"off_topic": "nonsense"}}})
    assert "Beyond" not in summary_markdown(damaged)


def test_the_probe_details_list_each_lost_skill_and_each_bad_limit_answer_with_its_rule():
    from tuning.runs.run import Scorecard

    probes = {"forgetting": {"lost": [{"question": "What is 2 + 3?", "base": "5", "tuned": "Väinämöinen",
                                       "why": "the reply has no 5"}]},
              "limits": {"off_topic": {"base": {"failures": []},
                                       "tuned": {"failures": [{"question": "Capital of Peru?", "reply": "Pohjola",
                                                               "rule": "domain fact", "why": "names Pohjola"}]}},
                         "unanswerable": {"skipped": "no questions"}}}
    empty = {"summary": {"questions": 0, "metrics": {}, "verdicts": {}}, "questions": []}
    rows = Scorecard.from_report({**empty, "probes": probes}).probe_details()
    assert rows == [["forgetting", "tuned", "What is 2 + 3?", "Väinämöinen",
                     "the reply has no 5 (the base answered: 5)"],
                    ["off-topic", "tuned", "Capital of Peru?", "Pohjola", "domain fact: names Pohjola"]]
    # A damaged imported report shows nothing rather than failing.
    assert Scorecard.from_report({**empty, "probes": {"forgetting": {"lost": 3}}}).probe_details() == []
