"""Reviewing generated pairs: the table, accept-all-unflagged, edits, and what is added."""

from tuning.data.examples import read_jsonl
from tuning.qa.generate import GeneratedPair
from tuning.qa.review import NO_FLAGS, accept_unflagged, accepted_pairs, review_table
from tuning.qa.validate import WEAKLY_GROUNDED
from tuning.data.workspace import add_accepted, new_workspace, save_review

WHERE = {"source": "source.md", "chunk_id": 2, "start": 1200, "end": 2650, "batch": 4}
PAIRS = [
    GeneratedPair("Where was Lönnrot born?", "In Sammatti.", dict(WHERE), grounding=1.0),
    GeneratedPair("Who was Lönnrot's wife?", "Queen Victoria.", dict(WHERE), flags=[WEAKLY_GROUNDED], grounding=0.0,
                  judge_score=2, judge_reason="made up"),
    GeneratedPair("What is Kalevala Day?", "28 February, the day Lönnrot signed the preface.", dict(WHERE)),
]


def test_table_shows_flags_scores_and_provenance_with_nothing_kept_yet():
    table = review_table(PAIRS)
    assert [row[0] for row in table] == [False, False, False]
    assert table[0][3] == NO_FLAGS and table[1][3] == WEAKLY_GROUNDED
    assert table[1][5] == "2/10 made up"
    assert table[0][6] == "source.md · part 3 · chars 1200–2650 · batch 4"


def test_accept_all_unflagged_ticks_only_clean_pairs():
    table = accept_unflagged(review_table(PAIRS))
    assert [row[0] for row in table] == [True, False, True]


def test_edits_are_kept_and_marked_and_unticked_pairs_are_not_added():
    table = accept_unflagged(review_table(PAIRS))
    table[2][2] = "Kalevala Day is 28 February."
    accepted, problems = accepted_pairs(table, PAIRS)
    assert not problems
    assert [p.answer for p in accepted] == ["In Sammatti.", "Kalevala Day is 28 February."]
    assert "edited" not in accepted[0].provenance and accepted[1].provenance["edited"] is True


def test_a_ticked_pair_emptied_by_an_edit_is_named():
    table = review_table(PAIRS)
    table[1][0], table[1][1] = "true", "  "  # a table may hand checkboxes back as strings
    accepted, problems = accepted_pairs(table, PAIRS)
    assert not accepted and problems == ["row 2: the question is empty -- write it or untick 'keep'"]


def test_review_and_accepted_files_keep_everything(tmp_path):
    workspace = new_workspace(tmp_path)
    rows = [p.to_row() for p in PAIRS]
    review = save_review(workspace, rows)
    assert [GeneratedPair.from_row(r) for r in read_jsonl(review)] == PAIRS
    first = add_accepted(workspace, rows[:1])
    add_accepted(workspace, rows[1:])
    assert first.read_text(encoding="utf-8").count("\n") == 3
