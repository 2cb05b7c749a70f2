"""Feedback on chat answers: the vote and correction buttons under the Chat panes, and the Data tab's list of what a
visitor gave (delete, download). The items live in the visitor's own feedback folder (tuning/feedback/store.py).

One question's feedback is one item: its id is a digest of the question, both answers and the adapter, so a vote
and a later correction of the same answers land in the same item, and a new answer makes a new one.
"""

from __future__ import annotations

import hashlib
import secrets

import gradio as gr

from tuning.errors import KanteleError
from tuning.feedback.retrain import feedback_counts
from tuning.feedback.store import FeedbackItem, add_feedback, delete_feedback, feedback_jsonl, list_feedback
from tuning.runs.owner import Owner
from ui.messages import for_visitor
from ui.panes import is_note, message_text
from ui.state import feedback_workspace
from ui.untrusted import original_text

VOTE_BUTTONS = {"left": "◀ Left better", "right": "Right better ▶", "both_wrong": "Both wrong"}
VOTE_WORDS = {"left": "the base model's answer is better", "right": "the tuned model's answer is better",
              "both_wrong": "both answers are wrong"}
LIST_COLUMNS = ["time", "question", "vote", "correction", "tuned answer", "base answer", "adapter"]
NOT_IDENTIFIED = "**Not saved:** this browser is not identified yet -- reload the page"
NO_EXCHANGE = "**Nothing to rate yet:** ask both models a question first."
NO_ADAPTER = ("**Not saved:** the right pane has no adapter -- feedback compares the base model with a tuned one; pick "
              "a finished run (or a Hub adapter) above and ask again.")
CUT = 60  # characters of a question in the delete picker


def last_exchange(history: list[dict]) -> tuple[str, str] | None:
    """(the last question, the answer after it) of a pane, as the model saw and wrote them; None before any."""
    users = [i for i, m in enumerate(history or []) if m.get("role") == "user"]
    if not users:
        return None
    answers = [m for m in history[users[-1] + 1:] if m.get("role") == "assistant" and not is_note(m)]
    question = original_text(message_text(history[users[-1]].get("content")))
    return question, original_text(message_text(answers[-1].get("content"))) if answers else ""


def _item_id(question: str, base: str, tuned: str, adapter: str) -> str:
    return hashlib.sha256("\0".join([question, base, tuned, adapter]).encode("utf-8", "replace")).hexdigest()[:16]


def feedback_item(base_history: list, tuned_history: list, adapter: str | None, hub_adapter: str | None,
                  settings: dict, base_only: str) -> FeedbackItem | str:
    """The item for the panes' last exchange (its kept vote and correction when there is one), or why there is none."""
    base, tuned = last_exchange(base_history), last_exchange(tuned_history)
    if base is None or tuned is None:
        return NO_EXCHANGE
    if not hub_adapter and (not adapter or adapter == base_only):
        return NO_ADAPTER
    question, base_answer = base
    named = hub_adapter or adapter
    return FeedbackItem(id=_item_id(question, base_answer, tuned[1], named), question=question, base_answer=base_answer,
                        tuned_answer=tuned[1], run=None if hub_adapter else adapter, adapter=named, settings=settings)


def keep(owner: Owner | None, item: FeedbackItem | str, vote: str | None = None, correction: str | None = None) -> str:
    """Keep the vote or correction on the item (merged with what was kept for the same answers); the line to show."""
    if owner is None:
        return NOT_IDENTIFIED
    if isinstance(item, str):
        return item
    workspace = feedback_workspace(owner)
    try:
        kept = next((k for k in list_feedback(workspace) if k.id == item.id), None)
        if kept is not None:
            item.vote, item.correction, item.time = kept.vote, kept.correction, kept.time
        if vote is not None:
            item.vote = vote
        if correction is not None:
            item.correction = correction
        add_feedback(workspace, item)
        counts = feedback_counts(workspace)
    except (KanteleError, ValueError) as error:  # CapError is a ValueError
        return f"**Not saved:** {for_visitor(error)}"
    what = f"vote saved ({VOTE_WORDS[vote]})" if vote else "correction saved"
    return (f"Feedback {what}. You have {counts.summary()} -- see them in the Data tab; \"Train again with my "
            "corrections\" in the Train tab learns from them.")


def open_correction(base_history: list, tuned_history: list):
    """Show the correction box, seeded with the tuned model's last answer to edit."""
    tuned = last_exchange(tuned_history)
    if last_exchange(base_history) is None or tuned is None:
        return gr.update(visible=False), gr.skip(), NO_EXCHANGE
    return gr.update(visible=True), tuned[1], "Edit the tuned model's answer into the one it should have given, then save."


# ---- the Data tab's list ----

def feedback_view(owner: Owner | None):
    """The list, the delete picker's choices, the download and the summary line, for this visitor."""
    if owner is None:
        return [], gr.update(choices=[], value=[]), gr.update(value=None, visible=False), ""
    workspace = feedback_workspace(owner)
    try:
        items = list_feedback(workspace)
    except (KanteleError, ValueError) as error:
        return [], gr.update(choices=[], value=[]), gr.update(visible=False), f"**Can't read it:** {for_visitor(error)}"
    rows = [[item.time.replace("+00:00", "Z"), item.question, item.vote or "", item.correction or "", item.tuned_answer,
             item.base_answer, item.adapter or ""] for item in items]
    choices = [(f"{item.time[11:16]} · {_short(item.question)}", item.id) for item in items]  # shown as text
    download = gr.update(value=str(feedback_jsonl(workspace)), visible=True) if items else gr.update(value=None,
                                                                                                      visible=False)
    summary = feedback_counts(workspace).summary() + "." if items else (
        "No feedback yet: under the answers in Chat, vote for the better pane or correct the tuned model's answer.")
    return rows, gr.update(choices=choices, value=[]), download, summary


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CUT else text[:CUT - 1] + "…"


def delete_items(ids: list[str] | None, owner: Owner | None):
    """Delete the picked items (and the training files made from them); the refreshed view."""
    if owner is not None and ids:
        delete_feedback(feedback_workspace(owner), list(ids))
    return feedback_view(owner)


def build_feedback_list(owner_state: gr.State, feedback_changed: gr.State) -> None:
    """The Data tab's Feedback panel: what this visitor said about chat answers, to delete or download."""
    with gr.Accordion("Feedback from Chat", open=True):
        summary = gr.Markdown(elem_id="feedback-summary")
        table = gr.Dataframe(headers=LIST_COLUMNS, interactive=False, wrap=True, elem_id="feedback-list",
                             label="Your votes and corrections (kept for you alone)")
        with gr.Row():
            picked = gr.Dropdown([], multiselect=True, label="Pick items to delete", elem_id="feedback-picked",
                                 scale=3)
            delete = gr.Button("Delete picked", variant="stop", elem_id="feedback-delete", scale=1)
            refresh = gr.Button("Refresh", scale=1)
        download = gr.DownloadButton("Download feedback (JSONL)", visible=False, elem_id="feedback-download")
    outputs = [table, picked, download, summary]
    feedback_changed.change(feedback_view, owner_state, outputs)
    owner_state.change(feedback_view, owner_state, outputs)
    refresh.click(feedback_view, owner_state, outputs)
    delete.click(delete_items, [picked, owner_state], outputs)


def build_chat_feedback() -> dict:
    """The buttons under the Chat panes (a vote for the better pane, both wrong, a corrected answer); wired by
    wire_chat_feedback once the tab's settings exist."""
    with gr.Row():
        votes = {vote: gr.Button(label, size="sm", elem_id=f"vote-{vote.replace('_', '-')}")
                 for vote, label in VOTE_BUTTONS.items()}
        correct = gr.Button("Correct the answer", size="sm", elem_id="correct-answer")
    with gr.Column(visible=False) as correction_box:
        correction = gr.Textbox(label="The answer the tuned model should have given", lines=3,
                                elem_id="correction-text")
        save = gr.Button("Save correction", variant="primary", size="sm", elem_id="save-correction")
    status = gr.Markdown(elem_id="feedback-status")
    return {"votes": votes, "correct": correct, "box": correction_box, "correction": correction, "save": save,
            "status": status}


def wire_chat_feedback(parts: dict, panes: list, owner_state: gr.State, adapter, hub_adapter, controls: list,
                       settings_of, base_only: str, feedback_changed: gr.State) -> None:
    """The buttons' events: each keeps the panes' last question and answers, with the settings they were made with
    (settings_of(*controls) as a dict), in the visitor's feedback folder."""
    facts = [*panes, owner_state, adapter, hub_adapter, *controls]

    def item_of(base_history, tuned_history, adapter_name, hub_name, values):
        return feedback_item(base_history, tuned_history, adapter_name, hub_name, settings_of(*values), base_only)

    def vote_for(vote: str):
        def record_vote(base_history, tuned_history, owner, adapter_name, hub_name, *values):
            line = keep(owner, item_of(base_history, tuned_history, adapter_name, hub_name, values), vote=vote)
            return line, _bump(line)
        return record_vote

    def save_correction(text, base_history, tuned_history, owner, adapter_name, hub_name, *values):
        line = keep(owner, item_of(base_history, tuned_history, adapter_name, hub_name, values), correction=text or "")
        return line, _bump(line), gr.update(visible=line.startswith("**Not saved"))

    for vote, button in parts["votes"].items():
        button.click(vote_for(vote), facts, [parts["status"], feedback_changed])
    parts["correct"].click(open_correction, panes, [parts["box"], parts["correction"], parts["status"]])
    parts["save"].click(save_correction, [parts["correction"], *facts],
                        [parts["status"], feedback_changed, parts["box"]])


def _bump(line: str):
    """A new value for the shared 'feedback changed' state when something was kept (the Data tab's list follows)."""
    return gr.skip() if line.startswith("**") else secrets.token_hex(4)
