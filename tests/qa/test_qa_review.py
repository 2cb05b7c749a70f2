"""Reviewing generated pairs: the table, accept-all-unflagged, edits, what is added; the review session's steps."""

import json

import pytest

from tuning.data.examples import read_jsonl
from tuning.data.workspace import ACCEPTED_FILE, GENERATED_DIR, REVIEW_FILE, add_accepted, new_workspace, save_review
from tuning.qa.generate import BatchResult, GeneratedPair, QASettings
from tuning.qa.review import NO_FLAGS, accept_unflagged, accepted_pairs, review_table
from tuning.qa.session import NO_WORKSPACE, REJECTED, STALE_TABLE, ReviewSession
from tuning.qa.sources import chunk_text
from tuning.qa.validate import WEAKLY_GROUNDED

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


# --- The review session: each step, and nothing the person accepted is lost -----------------------------------

PASSAGE = ("Elias Lönnrot was born in Sammatti in 1802. He compiled the Kalevala from poems he collected in Karelia. "
           "Kalevala Day is 28 February, the day Lönnrot signed the preface of the first edition in 1835.")


def on_disk(workspace, name: str) -> list[dict]:
    path = workspace / GENERATED_DIR / name
    return read_jsonl(path) if path.is_file() else []


def under_review(*pairs) -> ReviewSession:
    return ReviewSession(rows=[p.to_row() for p in pairs])


def ticked(session: ReviewSession, *keep: bool) -> list[list]:
    return session.table(list(keep))


class ScriptedBackend:
    """Answers each generation request with the next batch of (question, answer) pairs."""

    kind, label, max_in_flight = "scripted", "scripted replies", 1

    def __init__(self, *batches):
        self.batches = list(batches)

    def complete(self, request):
        return json.dumps([{"question": q, "answer": a} for q, a in self.batches.pop(0)])


def test_state_round_trips_through_json_and_is_copied():
    session = under_review(*PAIRS)
    session.removed.append({"failed_batch": 1, "error": "no JSON", "raw_reply": "sorry"})
    state = json.loads(json.dumps(session.state()))
    again = ReviewSession.from_state(state)
    assert again == session and again.pairs() == PAIRS
    again.rows.pop()
    again.removed.clear()
    assert len(state["rows"]) == 3 and len(state["removed"]) == 1, "a step works on a copy of the caller's state"
    assert ReviewSession.from_state(None) == ReviewSession() and ReviewSession().state() == {"rows": [], "removed": []}


def test_a_batch_joins_the_review_and_is_saved_its_removed_pairs_are_listed(tmp_path):
    workspace = new_workspace(tmp_path)
    duplicate = GeneratedPair("Where was Lönnrot born again?", "Sammatti.", dict(WHERE), removed="duplicate of x")
    session = ReviewSession()
    session.add_batch(BatchResult(number=1, chunk=None, kept=PAIRS[:2], removed=[duplicate]), workspace)
    failed = BatchResult(number=2, chunk=chunk_text(PASSAGE, "pasted")[0], error="attempt 2: no JSON", raw_reply="?")
    session.add_batch(failed, workspace)
    assert session.pairs() == PAIRS[:2]
    assert [GeneratedPair.from_row(r) for r in on_disk(workspace, REVIEW_FILE)] == PAIRS[:2]
    assert session.removed_table() == [
        [duplicate.question, duplicate.answer, "duplicate of x", "source.md"],
        ["", "?", "batch 2 failed: attempt 2: no JSON", "pasted part 1"]]


def test_generate_adds_each_batch_before_yielding_it_and_skips_questions_already_asked(tmp_path):
    workspace = new_workspace(tmp_path)
    session = under_review(PAIRS[0])
    chunks = chunk_text(PASSAGE, "pasted")
    backend = ScriptedBackend([("Where was Lönnrot born?", "In Sammatti."),  # under review already
                               ("Who forged the Sampo?", "Ilmarinen."),  # in the dataset already
                               ("When is Kalevala Day?", "28 February.")])
    results = session.generate(chunks, backend, QASettings(batches=1), ["Who forged the Sampo?"], workspace)
    first = next(results)
    assert [p.question for p in first.kept] == ["When is Kalevala Day?"]
    assert len(first.removed) == 2 and all(p.removed.startswith("duplicate of") for p in first.removed)
    assert session.questions() == ["Where was Lönnrot born?", "When is Kalevala Day?"]
    assert len(on_disk(workspace, REVIEW_FILE)) == 2, "saved before the batch is shown"
    assert len(session.removed) == 2
    results.close()  # a cancel: what was made stays
    assert len(session.rows) == 2


def test_tick_unflagged_keeps_the_persons_edits_and_other_ticks():
    table = under_review(*PAIRS).table()
    table[1][0], table[2][2] = True, "Edited."
    table = ReviewSession.tick_unflagged(table)
    assert [row[0] for row in table] == [True, True, True] and table[2][2] == "Edited."


def test_accept_writes_the_ticked_pairs_with_edits_and_keeps_the_rest_under_review(tmp_path):
    workspace = new_workspace(tmp_path)
    session = under_review(*PAIRS)
    table = ticked(session, True, False, True)
    table[2][2] = "Kalevala Day is 28 February."
    outcome = session.accept(table, workspace)
    assert not outcome.problems and outcome.file == workspace / GENERATED_DIR / ACCEPTED_FILE
    assert [p.answer for p in outcome.pairs] == ["In Sammatti.", "Kalevala Day is 28 February."]
    written = [GeneratedPair.from_row(r) for r in on_disk(workspace, ACCEPTED_FILE)]
    assert written == outcome.pairs and written[1].provenance["edited"] is True
    assert session.pairs() == [PAIRS[1]], "the unticked pair stays under review"
    assert [GeneratedPair.from_row(r) for r in on_disk(workspace, REVIEW_FILE)] == [PAIRS[1]]
    assert session.table() == review_table([PAIRS[1]])


def test_a_second_accept_appends_to_what_was_accepted_before(tmp_path):
    workspace = new_workspace(tmp_path)
    session = under_review(*PAIRS)
    session.accept(ticked(session, True, False, False), workspace)
    session.accept(ticked(session, True, True), workspace)
    assert [GeneratedPair.from_row(r) for r in on_disk(workspace, ACCEPTED_FILE)] == [PAIRS[0], PAIRS[1], PAIRS[2]]
    assert session.rows == [] and on_disk(workspace, REVIEW_FILE) == []


@pytest.mark.parametrize("change, problem", [
    (lambda table: table, None),  # nothing ticked
    (lambda table: [[True, "  ", *row[2:]] for row in table], "row 1: the question is empty"),
    (lambda table: [[True, *row[1:]] for row in table[:2]], "the review table has 2 rows for 3 pairs"),
])
def test_an_accept_that_cant_be_done_changes_nothing(tmp_path, change, problem):
    workspace = new_workspace(tmp_path)
    session = under_review(*PAIRS)
    before = session.state()
    outcome = session.accept(change(session.table()), workspace)
    assert not outcome.pairs and outcome.file is None
    assert (outcome.problems[0].startswith(problem) if problem else outcome.problems == [])
    assert session.state() == before and on_disk(workspace, ACCEPTED_FILE) == []


def test_an_accept_without_a_workspace_says_so_and_keeps_the_pairs():
    session = under_review(*PAIRS)
    outcome = session.accept(ticked(session, True, True, True), None)
    assert outcome.problems == [NO_WORKSPACE] and session.pairs() == PAIRS


def test_reject_moves_the_unticked_pairs_to_removed_with_the_reason():
    session = under_review(*PAIRS)
    outcome = session.reject_unticked(ticked(session, True, False, True))
    assert [(p.question, p.removed) for p in outcome.pairs] == [(PAIRS[1].question, REJECTED)] and not outcome.problems
    assert session.pairs() == [PAIRS[0], PAIRS[2]]
    assert [GeneratedPair.from_row(r).removed for r in session.removed] == [REJECTED]
    assert session.removed_table() == [[PAIRS[1].question, PAIRS[1].answer, REJECTED, "source.md"]]


def test_reject_with_an_out_of_date_table_changes_nothing():
    session = under_review(*PAIRS)
    before = session.state()
    outcome = session.reject_unticked(ticked(session, False, False))
    assert outcome.problems == [STALE_TABLE] and session.state() == before


def test_every_pair_generated_ends_accepted_under_review_or_removed_with_a_reason(tmp_path):
    """Generate, accept some (one edited), reject others, generate more, accept again: nothing is lost."""
    workspace = new_workspace(tmp_path)
    chunks = chunk_text(PASSAGE, "pasted")
    session = ReviewSession()
    first = [("Where was Lönnrot born?", "In Sammatti."), ("What did Lönnrot compile?", "The Kalevala."),
             ("Where were the poems collected?", "In Karelia.")]
    list(session.generate(chunks, ScriptedBackend(first), QASettings(batches=1), [], workspace))
    table = ticked(session, True, False, False)
    table[0][2] = "Sammatti, in 1802."
    session.accept(table, workspace)
    session.reject_unticked(ticked(session, True, False))  # keep one for later, reject the other
    second = [("When is Kalevala Day?", "28 February."), ("When was the first edition?", "In 1835.")]
    list(session.generate(chunks, ScriptedBackend(second), QASettings(batches=1), [], workspace))
    session.accept(ticked(session, True, True, False), workspace)

    accepted = [GeneratedPair.from_row(r) for r in on_disk(workspace, ACCEPTED_FILE)]
    assert [(p.question, p.answer) for p in accepted] == [
        ("Where was Lönnrot born?", "Sammatti, in 1802."), ("What did Lönnrot compile?", "The Kalevala."),
        ("When is Kalevala Day?", "28 February.")]
    assert session.questions() == ["When was the first edition?"]
    assert [r["messages"][0]["content"] for r in on_disk(workspace, REVIEW_FILE)] == session.questions()
    assert [(r["messages"][0]["content"], r["removed"]) for r in session.removed] == [
        ("Where were the poems collected?", REJECTED)]
