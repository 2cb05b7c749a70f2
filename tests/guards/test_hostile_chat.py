"""Chat against hostile or careless visitors: a follow-up remembers the turn before it, an overlong question is
cut to the model's context and the pane says so, one visitor's flood doesn't make others wait, and what a
model or an imported run wrote renders without images or HTML."""

import shutil
import threading

import gradio as gr
import pytest

from tuning.chat.context import fit_prompt
from tuning.chat.side_by_side import SideBySideChat
from tuning.models.loading import load_tokenizer, resolve_model
from tuning.runs.owner import Owner, new_visitor_id, record_owner
from tuning.runs.queue import TrainingQueue
from tuning.runs.visitor_runs import VisitorRuns
from ui import chat_tab
from ui.untrusted import inert_markdown, original_text

RUN_ID = "20250101-000000-chat-run-abcdef"
GREEDY_16 = (16, True, 0.7, 50, 1.0, 1.0)  # max new tokens, greedy, temperature, top-k, top-p, repetition penalty


@pytest.fixture
def owned_run(tmp_path, monkeypatch, trained_run) -> Owner:
    """The shared trained run as a finished run of one visitor's, in a queue the Chat tab uses."""
    queue = TrainingQueue(tmp_path / "runs")
    shutil.copytree(trained_run, queue.runs_dir / RUN_ID)
    owner = Owner(new_visitor_id())
    record_owner(queue.runs_dir / RUN_ID, owner)
    monkeypatch.setattr(chat_tab, "RUNS", VisitorRuns(queue))
    return owner


def as_sent_by_the_browser(history: list[dict]) -> list[dict]:
    """A pane's history the way this gradio hands it back to the next request: content as a list of parts."""
    chatbot = gr.Chatbot()
    return chatbot.preprocess(chatbot.postprocess(history))


def final(generator):
    *_, last = generator
    return last


def test_a_follow_up_is_answered_with_the_earlier_turns(owned_run, asked):
    seen = asked
    base, tuned, _ = final(chat_tab.ask_both("My name is Aino.", [], [], owned_run, RUN_ID, "", *GREEDY_16))
    first_answer = chat_tab.message_text(tuned[-1]["content"])
    assert first_answer
    final(chat_tab.ask_both("What is my name?", as_sent_by_the_browser(base), as_sent_by_the_browser(tuned),
                            owned_run, RUN_ID, "", *GREEDY_16))
    base_turns, tuned_turns = seen[-1]
    assert [m["role"] for m in tuned_turns] == ["user", "assistant", "user"]
    assert tuned_turns[0]["content"] == "My name is Aino." and tuned_turns[1]["content"] == first_answer
    assert base_turns[0]["content"] == "My name is Aino." and len(base_turns) == 3


def test_retry_asks_the_last_question_again_from_a_browser_history(owned_run):
    base, tuned, _ = final(chat_tab.ask_both("Who compiled the Kalevala?", [], [], owned_run, RUN_ID, "", *GREEDY_16))
    base2, tuned2, _ = final(chat_tab.retry_last(as_sent_by_the_browser(base), as_sent_by_the_browser(tuned),
                                                 owned_run, RUN_ID, "", *GREEDY_16))
    assert [chat_tab.message_text(m["content"]) for m in base2 if m["role"] == "user"] == ["Who compiled the Kalevala?"]
    assert len(tuned2) == 2


def test_an_overlong_question_is_cut_to_the_context_and_the_pane_says_so(owned_run, monkeypatch):
    monkeypatch.setenv("KANTELE_SHARED", "1")  # a shared app reads at most 2,048 tokens of conversation
    question = "Tell me about the Kalevala. " * 2500 + "Who compiled it?"  # 70,000 characters
    base, tuned, _ = final(chat_tab.ask_both(question, [], [], owned_run, RUN_ID, "", *GREEDY_16))
    for pane in (base, tuned):
        notes = [m for m in pane if (m.get("metadata") or {}).get("title") == chat_tab.CUT_NOTE_TITLE]
        assert len(notes) == 1 and "only the end of the question was kept" in notes[0]["content"]
        assert pane[-1]["role"] == "assistant"
    # The note is the app's, not the conversation's: it is not sent back to the model next time.
    messages = chat_tab._history_messages(as_sent_by_the_browser(tuned))
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_fitting_drops_the_oldest_turns_first_and_keeps_the_system_prompt():
    tokenizer = load_tokenizer(resolve_model("embedded").path)
    system = {"role": "system", "content": "Answer briefly."}
    turns = [{"role": role, "content": f"{role} turn {i} " + "word " * 40}
             for i in range(6) for role in ("user", "assistant")][:-1]
    whole = fit_prompt(tokenizer, [system, *turns], 10_000)
    assert not whole.was_cut and whole.note() == ""
    fitted = fit_prompt(tokenizer, [system, *turns], len(whole.ids) // 2)
    assert len(fitted.ids) <= len(whole.ids) // 2 and fitted.dropped_turns >= 2 and not fitted.cut_question
    text = tokenizer.decode(fitted.ids)
    assert "Answer briefly." in text and "user turn 5" in text and "user turn 0" not in text
    assert "oldest messages" in fitted.note()


def test_a_question_alone_over_the_budget_keeps_its_end():
    tokenizer = load_tokenizer(resolve_model("embedded").path)
    fitted = fit_prompt(tokenizer, [{"role": "user", "content": "blah " * 5000 + "Who forged the Sampo?"}], 64)
    assert len(fitted.ids) <= 64 and fitted.cut_question
    assert "Who forged the Sampo?" in tokenizer.decode(fitted.ids)


def test_one_question_per_visitor_at_a_time(owned_run, monkeypatch):
    """On a shared app, a second question from the same session while the first streams is refused at once,
    not queued; another session is served."""
    monkeypatch.setenv("KANTELE_SHARED", "1")
    first = chat_tab.ask_both("Who compiled the Kalevala?", [], [], owned_run, RUN_ID, "", *GREEDY_16,
                              request=_request("flooder"))
    next(first)  # the first question holds its slot while it streams
    with pytest.raises(gr.Error, match="already have 1 questions in progress"):
        next(chat_tab.ask_both("What is the Sampo?", [], [], owned_run, RUN_ID, "", *GREEDY_16,
                               request=_request("flooder")))
    other = final(chat_tab.ask_both("What is the Sampo?", [], [], owned_run, RUN_ID, "", *GREEDY_16,
                                    request=_request("someone else")))
    assert chat_tab.message_text(other[1][-1]["content"])
    final(first)
    assert chat_tab.CHAT_SLOTS.in_flight("flooder") == 0  # the slot is given back when the answer ends
    final(chat_tab.ask_both("What is the Sampo?", [], [], owned_run, RUN_ID, "", *GREEDY_16,
                            request=_request("flooder")))


def test_the_per_visitor_limit_is_off_on_your_own_machine(monkeypatch):
    from tuning.guards.admission import PerVisitorLimit
    from tuning.guards.caps import caps

    monkeypatch.delenv("KANTELE_SHARED", raising=False)
    limit = PerVisitorLimit(lambda: caps().chats_per_visitor, "questions")
    with limit.hold("me"), limit.hold("me"), limit.hold("me"):
        pass
    monkeypatch.setenv("KANTELE_SHARED", "1")
    held = threading.Event()
    with limit.hold("me"):
        held.set()
        with pytest.raises(ValueError, match="limit per visitor"):
            with limit.hold("me"):
                pass


def test_a_shared_app_turns_a_flood_away_at_the_queue(monkeypatch):
    from app import build_app

    monkeypatch.setenv("KANTELE_SHARED", "1")
    assert build_app()._queue.max_size == 64
    monkeypatch.delenv("KANTELE_SHARED")
    assert build_app()._queue.max_size is None  # your own machine: as before


def _request(session: str) -> gr.Request:
    request = gr.Request()
    request.session_hash = session
    return request


@pytest.mark.parametrize("text", ["![beacon](http://127.0.0.1:9/b.png)", "<img src=http://127.0.0.1:9/b.png>",
                                  "![x][ref]\n\n[ref]: http://127.0.0.1:9/b.png", "<script>alert(1)</script>",
                                  "a < b and c > d, `x<y`, ![not](an image)", "\u200b<already"])
def test_untrusted_text_shows_as_itself_without_images_or_tags_and_round_trips(text):
    shown = inert_markdown(text)
    assert "![" not in shown and not any(shown[i + 1].isalpha() or shown[i + 1] in "/!?"
                                         for i, c in enumerate(shown[:-1]) if c == "<")
    assert original_text(shown) == text
    assert shown.replace("\u200b", "") == text.replace("\u200b", "")  # looks the same


def test_answers_reach_the_panes_inert_and_come_back_exact(owned_run, monkeypatch):
    beacon = "Sure: ![b](http://127.0.0.1:9/beacon.png) <img src=x>"

    def answers_with_a_beacon(self, *args, **kwargs):
        yield beacon, beacon

    monkeypatch.setattr(SideBySideChat, "stream_both", answers_with_a_beacon)
    base, tuned, _ = final(chat_tab.ask_both("Hi", [], [], owned_run, RUN_ID, "", *GREEDY_16))
    for pane in (base, tuned):
        assert pane[-1]["content"] == inert_markdown(beacon) != beacon
        assert chat_tab._history_messages(as_sent_by_the_browser(pane))[-1]["content"] == beacon


def test_a_flood_from_one_visitor_is_turned_away_and_another_visitor_is_answered(shared_app):
    """Through the running shared app's API: one session sends six questions at once; all but the one it may
    have in flight are refused at once, and a second session's question is answered meanwhile."""
    import sys
    import threading

    from helpers import REPO

    sys.path.insert(0, str(REPO / "tests"))
    from visitors import Visitor, flood

    url, _ = shared_app
    flooder, other = Visitor(url, "flooder"), Visitor(url, "other")
    burst = {}
    thread = threading.Thread(target=lambda: burst.update(flood(flooder, "Who is Aino?", chat_tab.BASE_ONLY, 16, 6)))
    thread.start()
    base, _, _ = other.ask("What is the Sampo?", ([], []), chat_tab.BASE_ONLY, 16)
    thread.join(timeout=600)
    assert burst["answered"] >= 1 and burst["refused"] >= 1, burst
    assert all("in progress" in reason for reason in burst["reasons"]), burst
    assert base[-1]["role"] == "assistant"


def test_the_shared_app_answers_a_70000_character_question_within_its_context(shared_app):
    """Through the running shared app's API: the question that held the one chat worker for minutes is cut to
    2,048 tokens of conversation, answered, and the pane says what was left out."""
    import sys

    from helpers import REPO

    sys.path.insert(0, str(REPO / "tests"))
    from visitors import Visitor

    url, _ = shared_app
    question = "Tell me about the Kalevala. " * 2500 + "Who compiled it?"
    base, tuned, _ = Visitor(url, "long-winded").ask(question, ([], []), chat_tab.BASE_ONLY, 16)
    notes = [m for m in base if (m.get("metadata") or {}).get("title") == chat_tab.CUT_NOTE_TITLE]
    assert len(notes) == 1 and "2,048 tokens" in chat_tab.message_text(notes[0]["content"])
    assert base[-1]["role"] == "assistant" and chat_tab.message_text(base[-1]["content"]).strip()
