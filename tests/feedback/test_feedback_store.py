"""Tests for tuning.feedback: keeping a visitor's votes and corrections in their workspace (checked, capped,
isolated, safe under concurrent requests), and turning them into training data the loaders read back."""

import json
import os
import threading

import pytest

from tuning.data.examples import load_examples
from tuning.data.preferences import load_preferences
from tuning.errors import KanteleError, UsageError
from tuning.feedback.convert import correction_rows, preference_rows, write_training_files
from tuning.feedback.store import (
    VOTES,
    FeedbackItem,
    add_feedback,
    delete_feedback,
    feedback_file,
    feedback_jsonl,
    list_feedback,
)
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_CAPS, SHARED_ENV, CapError

Q, BASE, TUNED = "Who forged the Sampo?", "Väinämöinen forged it.", "Ilmarinen forged it in Pohjola's smithy."
RIGHT = "Ilmarinen, the smith, forged the Sampo."


@pytest.fixture(autouse=True)
def local_app(monkeypatch):
    """Each test starts on a local app with no caps set, whatever the machine's environment says."""
    for name in [SHARED_ENV, "SYSTEM", "SPACE_ID", *(n for n in os.environ if n.startswith(CAP_ENV_PREFIX))]:
        monkeypatch.delenv(name, raising=False)


def item(**changes) -> FeedbackItem:
    fields = {"question": Q, "base_answer": BASE, "tuned_answer": TUNED, "run": "kalevala-20250101-120000",
              "adapter": "kalevala-20250101-120000", "settings": {"max_new_tokens": 64, "temperature": 0.0},
              "vote": "right"}
    return FeedbackItem(**{**fields, **changes})


# --- the store --------------------------------------------------------------------------------------------------


def test_an_item_is_kept_with_everything_it_was_given_and_lists_back(tmp_path):
    given = item(vote="both_wrong", correction=RIGHT)
    assert add_feedback(tmp_path, given) is given
    assert list_feedback(tmp_path) == [given]
    assert len(given.id) == 16 and given.time.endswith("+00:00")
    assert FeedbackItem.from_json(json.loads(json.dumps(given.to_json()))) == given
    assert feedback_file(tmp_path) == tmp_path / "feedback" / "feedback.jsonl"


def test_items_list_oldest_first_and_the_same_id_replaces_in_place(tmp_path):
    first, second = add_feedback(tmp_path, item(vote="left")), add_feedback(tmp_path, item(question="Who is Louhi?"))
    changed = FeedbackItem(**{**first.to_json(), "vote": None, "correction": RIGHT})  # the visitor corrects it later
    add_feedback(tmp_path, changed)
    assert list_feedback(tmp_path) == [changed, second]


def test_delete_removes_only_the_ids_asked_for(tmp_path):
    kept = [add_feedback(tmp_path, item(question=f"Question {n}?")) for n in range(4)]
    assert delete_feedback(tmp_path, [kept[1].id, kept[3].id, "f00d"]) == 2
    assert list_feedback(tmp_path) == [kept[0], kept[2]]
    assert delete_feedback(tmp_path, kept[0].id) == 1
    assert delete_feedback(tmp_path / "elsewhere", [kept[2].id]) == 0


def test_the_download_reads_back_as_the_items_and_is_refused_when_empty(tmp_path):
    with pytest.raises(UsageError, match="no feedback to download yet"):
        feedback_jsonl(tmp_path)
    kept = [add_feedback(tmp_path, item(vote=vote)) for vote in VOTES]
    lines = feedback_jsonl(tmp_path).read_text(encoding="utf-8").splitlines()
    assert [FeedbackItem.from_json(json.loads(line)) for line in lines] == kept


@pytest.mark.parametrize(("changes", "words"), [
    ({"vote": "middle"}, "vote 'middle' is not one of left, right, both_wrong"),
    ({"correction": "   "}, "the correction is empty"),
    ({"correction": f"  {TUNED} "}, "the correction is the tuned model's answer unchanged"),
    ({"vote": None}, "nothing to keep: no vote and no correction"),
    ({"question": " "}, "the question is empty"),
    ({"question": None}, "the question must be text"),
    ({"settings": {"f": object()}}, "the generation settings must be plain numbers"),
    ({"settings": {"seed": "9" * 5_000}}, "over 4,000"),
    ({"run": "r" * 201}, "the run must be a run id"),
    ({"correction": "\ud800"}, "half of a character pair"),
    ({"id": "../../etc"}, "is not lowercase hex"),
    ({"time": "yesterday"}, "is not an ISO 8601 time"),
])
def test_a_bad_item_is_refused_with_the_fix_and_nothing_is_kept(tmp_path, changes, words):
    with pytest.raises(UsageError) as caught:
        add_feedback(tmp_path, item(**changes))
    assert words in str(caught.value)
    assert list_feedback(tmp_path) == []


def test_caps_on_a_shared_app_refuse_long_texts_and_too_many_items(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_ENV, "1")
    limit = SHARED_CAPS.feedback_chars
    add_feedback(tmp_path, item(correction="x" * limit))  # at the cap: kept whole
    assert list_feedback(tmp_path)[0].correction == "x" * limit
    with pytest.raises(CapError) as caught:
        add_feedback(tmp_path, item(correction="x" * (limit + 1)))
    message = str(caught.value)
    assert f"the correction's length in characters is {limit + 1:,}, over this app's limit of {limit:,}" in message
    assert f"shorten the correction ({limit:,} characters or fewer)" in message
    assert f"{CAP_ENV_PREFIX}FEEDBACK_CHARS" in message and isinstance(caught.value, KanteleError)
    with pytest.raises(CapError, match="the tuned model's answer's length"):
        add_feedback(tmp_path, item(tuned_answer="y" * (limit + 1)))

    monkeypatch.setenv(f"{CAP_ENV_PREFIX}FEEDBACK_ITEMS", "3")
    kept = [add_feedback(tmp_path, item()) for _ in range(2)]
    with pytest.raises(CapError, match="the feedback items in this workspace is 4, over this app's limit of 3 -- "
                                       "delete the ones you no longer need"):
        add_feedback(tmp_path, item())
    add_feedback(tmp_path, FeedbackItem(**{**kept[0].to_json(), "vote": "left"}))  # a change is no new item
    assert len(list_feedback(tmp_path)) == 3


def test_locally_there_are_no_caps_on_feedback(tmp_path):
    add_feedback(tmp_path, item(correction="x" * (SHARED_CAPS.feedback_chars + 1)))
    assert len(list_feedback(tmp_path)) == 1


def test_two_workspaces_never_see_each_others_items(tmp_path):
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    mine = add_feedback(alice, item(question="Alice's question?"))
    theirs = add_feedback(bob, item(question="Bob's question?"))
    assert list_feedback(alice) == [mine] and list_feedback(bob) == [theirs]
    assert delete_feedback(alice, [theirs.id]) == 0  # another visitor's id deletes nothing here
    assert list_feedback(bob) == [theirs]
    write_training_files(alice)
    assert all(path.is_relative_to(alice) for path in write_training_files(alice) if path)
    assert "Bob" not in feedback_jsonl(alice).read_text(encoding="utf-8")


def test_concurrent_adds_of_one_visitor_are_all_kept(tmp_path):
    start = threading.Barrier(8)
    added, failures = [], []

    def vote(n):
        start.wait()
        try:
            for k in range(5):
                added.append(add_feedback(tmp_path, item(question=f"Question {n}.{k}?")).id)
        except Exception as error:  # noqa: BLE001 -- the assertion below reports it
            failures.append(error)

    threads = [threading.Thread(target=vote, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(i.id for i in list_feedback(tmp_path)) == sorted(added) and len(added) == 40
    assert not [p for p in feedback_file(tmp_path).parent.iterdir() if p.name.endswith(".tmp")]


# --- turning feedback into training data ------------------------------------------------------------------------


def test_corrections_become_sft_rows_with_their_provenance(tmp_path):
    corrected = item(vote=None, correction=f" {RIGHT} ")
    rows = correction_rows([corrected, item(vote="left")])
    assert rows == [{"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": RIGHT}],
                     "provenance": {"source": "chat-correction", "feedback_id": corrected.id, "time": corrected.time,
                                    "run": corrected.run, "adapter": corrected.adapter, "vote": None}}]


def test_votes_and_corrections_become_preference_pairs(tmp_path):
    items = [item(vote="left"), item(vote="right"), item(vote="both_wrong"), item(vote=None, correction=RIGHT),
             item(vote="both_wrong", correction=RIGHT), item(vote="left", base_answer=TUNED),
             item(vote="right", base_answer="")]
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["provenance"]["feedback_id"])
             for r in preference_rows(items)]
    assert pairs == [(BASE, TUNED, items[0].id), (TUNED, BASE, items[1].id),  # both_wrong alone: no pair
                     (RIGHT, TUNED, items[3].id), (RIGHT, TUNED, items[4].id), (RIGHT, BASE, items[4].id)]
    row = preference_rows(items[:1])[0]
    assert row["prompt"] == [{"role": "user", "content": Q}]
    assert row["provenance"]["source"] == "chat-feedback"
    assert (row["provenance"]["chosen"], row["provenance"]["rejected"]) == ("base", "tuned")


def test_the_training_files_load_back_and_follow_deletes(tmp_path):
    assert write_training_files(tmp_path) == (None, None)
    voted = add_feedback(tmp_path, item(vote="left"))
    assert write_training_files(tmp_path)[0] is None  # no correction yet: no SFT file
    corrected = add_feedback(tmp_path, item(question="Who rules Pohjola?", vote=None, correction="Louhi rules it."))
    sft, prefs = write_training_files(tmp_path)
    examples = load_examples(sft)
    assert [e["messages"][-1]["content"] for e in examples.examples] == ["Louhi rules it."]
    assert examples.report.ignored_fields == {"provenance": 1}  # kept in the file, reported by the loader
    preferences = load_preferences(prefs)
    assert len(preferences.rows) == 2 and preferences.rows[1]["provenance"]["feedback_id"] == corrected.id
    assert preferences.report.summary() == "read 2 preference rows: 2 kept, 0 empty, 0 duplicates removed"

    delete_feedback(tmp_path, [corrected.id])
    assert not sft.exists() and not prefs.exists()  # the deleted correction lives on in no training file
    assert write_training_files(tmp_path) == (None, prefs)
    assert [r["provenance"]["feedback_id"] for r in load_preferences(prefs).rows] == [voted.id]
