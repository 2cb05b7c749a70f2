"""The limits probe's rules against hand-written replies: off-topic redirects and domain leaks, admissions and
inventions, on the shipped sets and the Kalevala training answers."""

import json

import pytest
from helpers import REPO

from tuning.chat.probes.forgetting import ProbeSetError
from tuning.chat.probes.limits import (
    KALEVALA_UNANSWERABLE_FILE,
    OFF_TOPIC_FILE,
    domain_terms,
    judge_off_topic,
    judge_unanswerable,
    load_questions,
    off_topic_counts,
    unanswerable_counts,
)


@pytest.fixture(scope="module")
def kalevala_terms():
    rows = [json.loads(line) for line in (REPO / "datasets/kalevala/train.jsonl").read_text().splitlines()]
    return domain_terms([row["response"] for row in rows], " ".join(load_questions(OFF_TOPIC_FILE)))


def test_the_kalevala_domain_terms_are_its_proper_nouns(kalevala_terms):
    assert {"lonnrot", "vainamoinen", "sampo", "kalevala", "pohjola"} <= kalevala_terms
    assert not {"the", "they", "sorry", "that's", "february", "english", "paris", "moon"} & kalevala_terms


def test_shipped_sets():
    assert len(load_questions(OFF_TOPIC_FILE)) == 20 and len(load_questions(KALEVALA_UNANSWERABLE_FILE)) == 15


@pytest.mark.parametrize(("reply", "right", "rule"), [
    ("That's outside my topic. Ask me about the Sampo instead!", True, "redirect"),
    # As the Kalevala pairs teach it: a refusal naming the topic is a redirect, not a leaked domain fact.
    ("I can't help with that. I'm a guide to the Kalevala, Finland's national epic.", True, "redirect"),
    ("I can't give measurements, but I can tell you who forged the Sampo.", True, "redirect"),
    ("Pancakes need flour, milk and eggs.", True, "no domain fact"),
    ("Väinämöinen made the first pancakes from the Sampo's flour.", False, "domain fact"),
])
def test_off_topic_replies(kalevala_terms, reply, right, rule):
    verdict, _ = judge_off_topic("What is a good recipe for pancakes?", reply, kalevala_terms)
    assert verdict.correct is right and verdict.rule == rule and verdict.why


def test_a_domain_term_the_question_itself_names_is_no_leak(kalevala_terms):
    verdict, _ = judge_off_topic("Is Kalevala a good name for a boat?", "Kalevala is a fine name for a boat.",
                                 kalevala_terms)
    assert verdict.correct


@pytest.mark.parametrize(("reply", "right"), [
    ("I don't know -- the sources don't say what he liked to eat.", True),
    ("That isn't recorded anywhere I know of.", True),
    ("I’m not sure.", True),  # a typographic apostrophe
    ("Lönnrot loved rye bread and salted fish.", False),
])
def test_unanswerable_replies(reply, right):
    verdict = judge_unanswerable(reply)
    assert verdict.correct is right and verdict.rule == ("admits" if right else "invents")


def test_counts_keep_every_failure_with_the_rule_that_decided(kalevala_terms):
    off = off_topic_counts(["Who painted the Mona Lisa?", "How tall is Mount Everest?"],
                           ["Leonardo da Vinci.", "Ilmarinen forged it 8,848 metres tall."], kalevala_terms)
    assert (off.asked, off.good, off.redirected, off.share()) == (2, 1, 0, 0.5)
    assert off.examples[0]["rule"] == "domain fact" and "ilmarinen" in off.examples[0]["why"]
    unknown = unanswerable_counts(["What was Louhi's cat called?"], ["Her cat was called Musti."])
    assert unknown.good == 0 and unknown.examples[0]["rule"] == "invents"


def test_a_wrong_shaped_question_file_names_the_row(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "Fine?"}\n{"prompt": "Wrong key"}\n')
    with pytest.raises(ProbeSetError, match="mine.jsonl row 2: expected"):
        load_questions(path)
    path.write_text("\n")
    with pytest.raises(ProbeSetError, match="empty"):
        load_questions(path)
