"""The feedback buttons' and panels' handlers (ui/feedback_panel.py, ui/retrain_panel.py) on real files: a vote and a
correction of one answer become one item, each visitor sees only their own, and "Train again" builds the child
recipe each method needs -- or says what feedback is missing."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuning.config import DPO, SFT, load_recipe, save_recipe
from tuning.data.examples import load_examples
from tuning.data.preferences import load_preferences
from tuning.errors import UsageError
from tuning.feedback.retrain import REPLAY_MIN, TOPUP_LEARNING_RATE, retrain_recipe
from tuning.feedback.store import list_feedback
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_ENV
from tuning.runs.owner import Owner, new_visitor_id
from ui import feedback_panel, state
from ui.chat_tab import BASE_ONLY
from ui.untrusted import inert_markdown

REPO = Path(__file__).resolve().parents[2]
QUESTION, BASE, TUNED = "Who compiled the Kalevala?", "A Tamil poet <b>wrote</b> it.", "Väinämöinen compiled it."
RIGHT = "Elias Lönnrot compiled the Kalevala."
SETTINGS = {"max_new_tokens": 64, "temperature": 0.0}


@pytest.fixture(autouse=True)
def app_home(monkeypatch, tmp_path):
    """Workspaces under tmp_path, on a local app with no caps set."""
    for name in [SHARED_ENV, "SYSTEM", "SPACE_ID", *(n for n in os.environ if n.startswith(CAP_ENV_PREFIX))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(state, "WORKSPACES_DIR", tmp_path / "workspaces")
    return tmp_path


def panes(question=QUESTION, base=BASE, tuned=TUNED, note: bool = True):
    """Two panes as gradio holds them after one exchange: inert text, a retrieval note before the answer."""
    notes = [{"role": "assistant", "content": "passages…", "metadata": {"title": "Passages used"}}] if note else []
    asked = {"role": "user", "content": [{"type": "text", "text": inert_markdown(question)}]}
    return ([asked, *notes, {"role": "assistant", "content": [{"type": "text", "text": inert_markdown(base)}]}],
            [asked, *notes, {"role": "assistant", "content": [{"type": "text", "text": inert_markdown(tuned)}]}])


def vote(owner, vote_name, histories=None, adapter="run-1", correction=None):
    base, tuned = histories or panes()
    item = feedback_panel.feedback_item(base, tuned, adapter, "", SETTINGS, BASE_ONLY)
    return feedback_panel.keep(owner, item, vote=vote_name, correction=correction)


def test_the_last_exchange_is_read_as_the_model_wrote_it():
    base, tuned = panes()
    assert feedback_panel.last_exchange(base) == (QUESTION, BASE)  # the note skipped, the inert breaks undone
    assert feedback_panel.last_exchange(tuned) == (QUESTION, TUNED)
    assert feedback_panel.last_exchange([]) is None


def test_a_vote_and_a_correction_of_the_same_answers_are_one_item():
    owner = Owner(new_visitor_id())
    assert "vote saved" in vote(owner, "right")
    line = vote(owner, None, correction=RIGHT)
    assert "correction saved" in line and "1 correction" in line and "1 preference pair" not in line
    [item] = list_feedback(state.feedback_workspace(owner))
    assert (item.question, item.base_answer, item.tuned_answer) == (QUESTION, BASE, TUNED)
    assert (item.vote, item.correction, item.run, item.adapter, item.settings) == ("right", RIGHT, "run-1", "run-1",
                                                                                 SETTINGS)
    vote(owner, "left")  # a changed mind: the same item, the correction kept
    [item] = list_feedback(state.feedback_workspace(owner))
    assert (item.vote, item.correction) == ("left", RIGHT)
    vote(owner, "right", histories=panes(tuned="Lönnrot."))  # another answer: another item
    assert len(list_feedback(state.feedback_workspace(owner))) == 2


@pytest.mark.parametrize(("histories", "adapter", "expected"), [
    (([], []), "run-1", "Nothing to rate yet"),
    (None, BASE_ONLY, "no adapter"),
])
def test_feedback_without_two_answers_to_compare_is_refused(histories, adapter, expected):
    owner = Owner(new_visitor_id())
    assert expected in vote(owner, "left", histories=histories, adapter=adapter)
    assert "not identified" in vote(None, "left")
    assert list_feedback(state.feedback_workspace(owner)) == []


def test_a_correction_left_unedited_is_refused_with_the_fix():
    owner = Owner(new_visitor_id())
    line = vote(owner, None, correction=TUNED)
    assert line.startswith("**Not saved:**") and "unchanged" in line
    assert list_feedback(state.feedback_workspace(owner)) == []


def test_each_visitor_sees_and_deletes_only_their_own_feedback():
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    vote(alice, "right", correction=RIGHT)
    vote(bob, "left", histories=panes(question="What is the Sampo?"))
    alice_rows, alice_picker, alice_download, summary = feedback_panel.feedback_view(alice)
    bob_rows, bob_picker, _, _ = feedback_panel.feedback_view(bob)
    assert [row[1] for row in alice_rows] == [QUESTION] and [row[1] for row in bob_rows] == ["What is the Sampo?"]
    assert alice_rows[0][2:4] == ["right", RIGHT] and "1 correction" in summary
    assert Path(alice_download["value"]).read_text(encoding="utf-8").count("\n") == 1
    bob_ids = [value for _, value in bob_picker["choices"]]
    feedback_panel.delete_items(bob_ids, alice)  # alice names bob's items: nothing of either goes
    assert len(list_feedback(state.feedback_workspace(bob))) == 1
    assert len(list_feedback(state.feedback_workspace(alice))) == 1
    rows, picker, download, summary = feedback_panel.delete_items(bob_ids, bob)
    assert rows == [] and picker["choices"] == [] and download["visible"] is False and "No feedback yet" in summary


def finished_parent(folder: Path) -> Path:
    """A parent run folder as far as a recipe needs it: the CPU Kalevala recipe it trained with."""
    folder.mkdir(parents=True)
    save_recipe(load_recipe(REPO / "configs" / "kalevala.yaml"), folder / "config.yaml")
    return folder


def test_train_again_builds_an_sft_top_up_and_a_dpo_child(tmp_path):
    owner = Owner(new_visitor_id())
    workspace = state.feedback_workspace(owner)
    parent = finished_parent(tmp_path / "runs" / "parent")
    with pytest.raises(UsageError, match="Correct the answer"):
        retrain_recipe(parent, workspace, SFT)
    vote(owner, "right", histories=panes(tuned="Lönnrot."))  # a vote alone: a pair for DPO, nothing for SFT
    with pytest.raises(UsageError, match="votes alone train with DPO"):
        retrain_recipe(parent, workspace, SFT)
    vote(owner, "both_wrong", correction=RIGHT)

    top_up = retrain_recipe(parent, workspace, SFT)
    t = top_up.training
    assert (t.method, Path(t.parent_run), t.replay, t.max_steps) == (SFT, parent.resolve(), REPLAY_MIN, -1)
    assert top_up.data.validation == [] and top_up.model.name == "embedded"
    assert t.learning_rate == TOPUP_LEARNING_RATE < load_recipe(parent / "config.yaml").training.learning_rate
    rows = load_examples(top_up.data.train).examples
    assert [m["content"] for m in rows[0]["messages"]] == [QUESTION, RIGHT]

    dpo = retrain_recipe(parent, workspace, DPO)
    assert (dpo.training.method, dpo.training.replay) == (DPO, 0)
    pairs = load_preferences(dpo.data.train).rows
    assert len(pairs) == 3  # the vote's pair; the correction over the tuned and (both wrong) over the base answer

    feedback_panel.delete_items([i.id for i in list_feedback(workspace)], owner)
    assert load_examples(top_up.data.train).examples  # a queued run keeps the rows it was asked with
    with pytest.raises(UsageError, match="no preference pairs yet"):
        retrain_recipe(parent, workspace, DPO)


def test_a_refused_train_again_leaves_no_copy_of_the_feedback(monkeypatch, tmp_path):
    from tuning.feedback.retrain import SNAPSHOTS_DIR
    from tuning.guards.caps import CapError
    from ui import retrain_panel

    owner = Owner(new_visitor_id())
    vote(owner, "both_wrong", correction=RIGHT)
    parent = finished_parent(tmp_path / "runs" / "parent")

    class Runs:
        def __init__(self, refuse_at: str) -> None:
            self.refuse_at = refuse_at

        def check_room(self, asker):
            if self.refuse_at == "room":
                raise CapError("one queued or running run per visitor")

        def run(self, run_id, asker):
            return SimpleNamespace(path=parent)

        def preflight(self, recipe):
            raise CapError("the estimated training time is over the cap")

    snapshots = state.feedback_workspace(owner) / "feedback" / SNAPSHOTS_DIR
    for refuse_at in ("room", "preflight"):
        monkeypatch.setattr(retrain_panel, "RUNS", Runs(refuse_at))
        _, line = retrain_panel.start_retrain("parent", SFT, owner)
        assert line.startswith("**Not started:**")
        assert not snapshots.exists() or list(snapshots.iterdir()) == []
