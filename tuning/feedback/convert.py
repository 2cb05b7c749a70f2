"""Turn a visitor's chat feedback into training data: corrections into question/answer rows for supervised
fine-tuning, votes and corrections into preference pairs (tuning.data.preferences' format), written beside the
feedback for the Train tab to hand to a recipe."""

from __future__ import annotations

from pathlib import Path

from tuning.data.examples import write_jsonl
from tuning.data.preferences import write_preferences
from tuning.feedback.store import (
    CORRECTIONS_FILE,
    FEEDBACK_DIR,
    PREFERENCES_FILE,
    FeedbackItem,
    feedback_lock,
    list_feedback,
)

CORRECTION_SOURCE = "chat-correction"
FEEDBACK_SOURCE = "chat-feedback"


def correction_rows(items: list[FeedbackItem]) -> list[dict]:
    """One SFT row per corrected item: the question, and the correction as the answer, with its provenance."""
    return [{"messages": [{"role": "user", "content": item.question.strip()},
                          {"role": "assistant", "content": item.correction.strip()}],
             "provenance": _provenance(item, CORRECTION_SOURCE)}
            for item in items if item.correction is not None and item.correction.strip()]


def preference_rows(items: list[FeedbackItem]) -> list[dict]:
    """Preference pairs from the items, in order: a correction is chosen over the tuned answer (and, when the vote
    was both_wrong, over the base answer too); a 'left' vote chooses the base answer over the tuned one, a 'right'
    vote the tuned over the base. A both_wrong vote without a correction makes no pair: it says what is wrong, not
    what is right. A pair whose two answers are the same text, or one of them empty, is no lesson and is left out."""
    rows = []
    for item in items:
        answers = {"correction": (item.correction or "").strip(), "base": item.base_answer.strip(),
                   "tuned": item.tuned_answer.strip()}
        pairs = []  # (chosen, rejected) by name, so the provenance says which answer beat which
        if item.correction is not None:
            pairs.append(("correction", "tuned"))
            if item.vote == "both_wrong":
                pairs.append(("correction", "base"))
        if item.vote == "left":
            pairs.append(("base", "tuned"))
        elif item.vote == "right":
            pairs.append(("tuned", "base"))
        for chosen, rejected in pairs:
            if answers[chosen] and answers[rejected] and answers[chosen] != answers[rejected]:
                rows.append({"prompt": [{"role": "user", "content": item.question.strip()}],
                             "chosen": [{"role": "assistant", "content": answers[chosen]}],
                             "rejected": [{"role": "assistant", "content": answers[rejected]}],
                             "provenance": {**_provenance(item, FEEDBACK_SOURCE), "chosen": chosen,
                                            "rejected": rejected}})
    return rows


def write_training_files(workspace: Path) -> tuple[Path | None, Path | None]:
    """Write the workspace's feedback as (SFT rows, preference rows) under its feedback folder; None for a kind
    it has no rows of (and an older file of that kind is removed, so a recipe never trains on deleted feedback)."""
    folder = Path(workspace) / FEEDBACK_DIR
    written = []
    with feedback_lock(workspace):  # both files from one state of the feedback, not one each from two
        items = list_feedback(workspace)
        for rows, name, write in ((correction_rows(items), CORRECTIONS_FILE, write_jsonl),
                                  (preference_rows(items), PREFERENCES_FILE, write_preferences)):
            path = folder / name
            if rows:
                write(rows, path)
                written.append(path)
            else:
                path.unlink(missing_ok=True)
                written.append(None)
    return written[0], written[1]


def _provenance(item: FeedbackItem, source: str) -> dict:
    return {"source": source, "feedback_id": item.id, "time": item.time, "run": item.run, "adapter": item.adapter,
            "vote": item.vote}
