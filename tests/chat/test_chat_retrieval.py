"""Chat's "with retrieval" switch, with the embedded model and a real run: both panes are asked the question with
the run's best BM25 passages before it and show which (file, character span, text rendered inert); with nothing to
search the panes say why and how to get it; Retry keeps the switch; API callers that leave it out get it off."""

import json
import re
import shutil

import gradio as gr
import pytest

from tuning.chat.retrieval import index_for_run, with_passages
from tuning.runs.files import RUN_DATA_DIR, RUN_SOURCES_DIR, RUN_TRAIN_FILE
from tuning.runs.owner import Owner, new_visitor_id, record_owner
from tuning.runs.queue import TrainingQueue
from tuning.runs.visitor_runs import VisitorRuns
from ui import chat_tab
from ui.untrusted import original_text

RUN_ID = "20250101-000000-retrieval-run-abcdef"
GREEDY_8 = (8, True, 0.7, 50, 1.0, 1.0)  # max new tokens, greedy, temperature, top-k, top-p, repetition penalty
QUESTION = "Who compiled the Kalevala?"
SPAN = re.compile(r"\*\*\[1\] source\.md\*\*, characters [\d,]+–[\d,]+")


@pytest.fixture
def runs(tmp_path, monkeypatch, trained_run):
    """make(run_id, change=None): the shared trained run (on the Kalevala pairs) copied in as a finished run of one
    visitor's, `change(run_folder)` applied first; returns the owner. The Chat tab uses this queue."""
    queue = TrainingQueue(tmp_path / "runs")
    owner = Owner(new_visitor_id())
    monkeypatch.setattr(chat_tab, "RUNS", VisitorRuns(queue))

    def make(run_id: str = RUN_ID, change=None) -> Owner:
        shutil.copytree(trained_run, queue.runs_dir / run_id, ignore=shutil.ignore_patterns("checkpoints"))
        if change:
            change(queue.runs_dir / run_id)
        record_owner(queue.runs_dir / run_id, owner)
        return owner

    make.runs_dir = queue.runs_dir
    return make


def final(generator):
    *_, last = generator
    return last


def notes(pane: list[dict], title: str = "") -> list[dict]:
    """The app's notes in a pane (whose title starts with `title`)."""
    titled = [((m.get("metadata") or {}).get("title") or "", m) for m in pane]
    return [m for shown, m in titled if shown and shown.startswith(title)]


def as_sent_by_the_browser(history: list[dict]) -> list[dict]:
    """A pane's history the way gradio hands it back with the next question."""
    chatbot = gr.Chatbot()
    return chatbot.preprocess(chatbot.postprocess(history))


def test_both_panes_are_asked_with_the_passages_and_show_them(runs, asked):
    owner = runs()
    base, tuned, _ = final(chat_tab.ask_both(QUESTION, [], [], owner, RUN_ID, "", *GREEDY_8, True))
    passages = index_for_run(runs.runs_dir / RUN_ID).top([QUESTION])[0]
    assert len(passages) == 1  # the best passage alone (retrieval.DEFAULT_TOP_K, measured)
    base_messages, tuned_messages = asked[-1]
    assert base_messages[-1]["content"] == tuned_messages[-1]["content"] == with_passages(QUESTION, passages)
    assert passages[0].text.strip() in tuned_messages[-1]["content"]
    for pane in (base, tuned):
        assert [m["content"] for m in pane if m["role"] == "user"] == [QUESTION]  # shown as typed
        (note,) = notes(pane)
        assert re.fullmatch(r"Passages used \(BM25, top 1 of \d+ from source\.md\)", note["metadata"]["title"])
        assert note["metadata"]["status"] == "done"  # collapsed until opened
        assert SPAN.search(note["content"]) and "**[1] source.md**" in note["content"]
        assert passages[0].text.strip().splitlines()[0] in original_text(note["content"])
        assert pane[-1]["role"] == "assistant" and chat_tab.message_text(pane[-1]["content"]).strip()
    # The next turn sees the question as typed, not the passages, and no note; with the switch off, none is added.
    base2, tuned2, _ = final(chat_tab.ask_both("And when?", as_sent_by_the_browser(base),
                                               as_sent_by_the_browser(tuned), owner, RUN_ID, "", *GREEDY_8, False))
    _, tuned_messages = asked[-1]
    assert [m["content"] for m in tuned_messages if m["role"] == "user"] == [QUESTION, "And when?"]
    assert len(notes(tuned2)) == 1 and len(notes(base2)) == 1


def test_with_nothing_to_search_the_panes_say_why_and_how_and_answer_anyway(runs, asked):
    def pairs_not_made_from_documents(run):
        shutil.rmtree(run / RUN_DATA_DIR / RUN_SOURCES_DIR, ignore_errors=True)  # no documents kept...
        (run / RUN_DATA_DIR / RUN_TRAIN_FILE).write_text("".join(  # ...and pairs that are not the Kalevala's
            json.dumps({"prompt": f"What is {n} + {n}?", "response": f"{2 * n}."}) + "\n" for n in range(8)))

    owner = runs(change=pairs_not_made_from_documents)
    base, tuned, _ = final(chat_tab.ask_both(QUESTION, [], [], owner, RUN_ID, "", *GREEDY_8, True))
    assert asked[-1][1][-1]["content"] == QUESTION
    for pane in (base, tuned):
        (note,) = notes(pane)
        assert note["metadata"]["title"] == chat_tab.NO_RETRIEVAL_TITLE
        assert "keeps no source documents" in note["content"]
        assert "Generate pairs from documents" in note["content"] and "Kalevala example" in note["content"]
        assert chat_tab.message_text(pane[-1]["content"]).strip()
    # The base model alone: answered, with the same kind of note (the right pane shows what to do).
    base, tuned, _ = final(chat_tab.ask_both(QUESTION, [], [], owner, chat_tab.BASE_ONLY, "", *GREEDY_8, True))
    assert "no run is selected" in notes(base, chat_tab.NO_RETRIEVAL_TITLE)[0]["content"]
    assert chat_tab.message_text(base[-1]["content"]).strip()
    # A Hub adapter comes without documents (decided before anything is downloaded).
    prompt, (note,) = chat_tab._retrieved(QUESTION, owner, RUN_ID, "someone/an-adapter")
    assert prompt == QUESTION and "Hub adapter" in note["content"]


def test_passages_and_file_names_render_inert_but_reach_the_model_as_written(runs, asked):
    beacon = "The Sampo beacon says ![pixel](http://127.0.0.1:9/p.png) and <img src=http://127.0.0.1:9/h.png> here."

    def a_hostile_document(run):
        folder = run / RUN_DATA_DIR / RUN_SOURCES_DIR
        shutil.rmtree(folder, ignore_errors=True)  # the only document the run's pairs were made from
        folder.mkdir(parents=True)
        (folder / "<b>notes.md").write_text(f"# Notes\n\n{beacon}\n", encoding="utf-8")

    owner = runs(change=a_hostile_document)
    base, tuned, _ = final(chat_tab.ask_both("What does the Sampo beacon say?", [], [], owner, RUN_ID, "",
                                             *GREEDY_8, True))
    assert beacon in asked[-1][1][-1]["content"]  # the documents' own text went to the model
    for pane in (base, tuned):
        (note,) = notes(pane, chat_tab.PASSAGES_NOTE_TITLE)
        title, content = note["metadata"]["title"], note["content"]
        assert "top 1 of 1" in title and "<b>notes.md" not in title and "<b>notes.md" in original_text(title)
        assert "![" not in content and "<img" not in content and "<b>" not in content
        assert beacon in original_text(content) and "characters 0–" in content


def test_retry_keeps_the_switch(runs, asked):
    owner = runs()
    base, tuned, _ = final(chat_tab.ask_both(QUESTION, [], [], owner, RUN_ID, "", *GREEDY_8, True))
    base, tuned, _ = final(chat_tab.retry_last(base, tuned, owner, RUN_ID, "", *GREEDY_8, True))
    for pane in (base, tuned):
        assert [m["role"] for m in pane] == ["user", "assistant", "assistant"] and len(notes(pane)) == 1
    assert asked[-1][0][-1]["content"].startswith("Answer using these passages")
    base, tuned, _ = final(chat_tab.retry_last(base, tuned, owner, RUN_ID, "", *GREEDY_8))  # the switch left out: off
    assert notes(base) == [] and asked[-1][0][-1]["content"] == QUESTION


def test_an_overlong_question_with_retrieval_keeps_its_end_and_says_the_passages_went_first(runs, monkeypatch):
    monkeypatch.setenv("KANTELE_SHARED", "1")  # a shared app reads at most 2,048 tokens of conversation
    owner = runs()
    question = "Tell me about the Kalevala. " * 2500 + "Who compiled it?"
    base, tuned, _ = final(chat_tab.ask_both(question, [], [], owner, RUN_ID, "", *GREEDY_8, True))
    for pane in (base, tuned):
        (cut,) = notes(pane, chat_tab.CUT_NOTE_TITLE)
        assert "only the end of the question was kept" in cut["content"] and "passages" in cut["content"]
        assert len(notes(pane, chat_tab.PASSAGES_NOTE_TITLE)) == 1 and pane[-1]["role"] == "assistant"


def test_the_index_is_kept_per_run_and_rebuilt_when_a_document_changes(tmp_path):
    run = tmp_path / "run"
    assert index_for_run(run) is None  # no documents, no pairs
    folder = run / RUN_DATA_DIR / RUN_SOURCES_DIR
    folder.mkdir(parents=True)
    (folder / "a.md").write_text("Ilmarinen forged the Sampo.\n")
    first = index_for_run(run)
    assert index_for_run(run) is first
    (folder / "a.md").write_text("Ilmarinen forged the Sampo for Louhi of Pohjola.\n")
    rebuilt = index_for_run(run)
    assert rebuilt is not first and "Louhi" in rebuilt.passages[0].text


def test_an_api_caller_that_leaves_the_switch_out_gets_it_off(shared_app):
    """Through the running app's API (gradio_client): the 11 values callers passed before the switch existed still
    work -- the client fills the switch with its initial value, off -- and passing it turns retrieval on."""
    from visitors import Visitor

    url, _ = shared_app
    visitor = Visitor(url, "api")
    parameters = visitor.client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/ask_both"]
    switch = parameters["parameters"][-1]
    assert switch["label"] == chat_tab.RETRIEVAL_LABEL and switch["parameter_has_default"]
    assert switch["parameter_default"] is False
    base, _, _ = visitor.ask(QUESTION, ([], []), chat_tab.BASE_ONLY, 16)  # 11 values
    assert not notes(base) and base[-1]["role"] == "assistant"
    base, _, _ = visitor.client.predict(QUESTION, [], [], chat_tab.BASE_ONLY, "", 16, True, 0.7, 50, 1.0, 1.0, True,
                                        api_name="/ask_both")
    assert [m["metadata"]["title"] for m in notes(base)] == [chat_tab.NO_RETRIEVAL_TITLE]
