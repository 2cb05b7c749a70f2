"""eval.json's "parent" block for a run that continued another run's adapter: the parent's key-fact rate on the
same held-out questions, and each question's change from parent to child.

The scorecard itself stays base vs tuned, as for any run; this block answers the question a DPO run or a top-up
raises: did it keep what its parent knew? The parent's answers come from its own eval.json when it asked the same
questions with the same settings and system prompt (answers are greedy, so they would be the same), else the
parent's adapter answers them now.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tuning.runs.files import EVAL_FILE, read_json, write_json
from tuning.runs.run import Run

log = logging.getLogger("tuning.training.train")

REUSED, ANSWERED = "the parent's eval.json", "the parent's adapter, answering now"


def compare_with_parent(run_dir: Path, report: dict) -> dict | None:
    """Add the "parent" block to the run's eval.json (report: what score_run wrote); None for a run without a
    parent. A failure here is the caller's to log: the scorecard is already written."""
    from tuning.chat.scorecard import LEARNED, REGRESSED, UNCHANGED_RIGHT, UNCHANGED_WRONG, score_answer, verdict

    run = Run(run_dir)
    parent = run.parent()
    if parent is None:
        return None
    rows = report["questions"]
    answers, source = _parent_answers(run, parent, report)
    changes = []
    for row, answer in zip(rows, answers, strict=True):
        scores = score_answer(answer, row["reference"], row["key_facts"])
        changes.append({"question": row["question"], "parent": answer, "parent_scores": scores,
                        "change": verdict(scores, row["tuned_scores"])})
    counts = Counter(change["change"] for change in changes)
    block = {"run": parent.id, "answers_from": source,
             "key_fact": {"parent": _key_fact_rate([c["parent_scores"] for c in changes]),
                          "tuned": _key_fact_rate([row["tuned_scores"] for row in rows])},
             "changes": {name: counts.get(name, 0) for name in (LEARNED, REGRESSED, UNCHANGED_RIGHT, UNCHANGED_WRONG)},
             "questions": changes}
    report["parent"] = block
    write_json(run_dir / EVAL_FILE, report)
    log.info("against its parent %s (%s): key facts %s -> %s; %s", parent.id, source,
             block["key_fact"]["parent"], block["key_fact"]["tuned"],
             ", ".join(f"{name} {count}" for name, count in block["changes"].items()))
    return block


def _key_fact_rate(scores: list[dict]) -> float | None:
    """The share of answers holding their key facts (questions without key facts left out; None: none had any)."""
    judged = [bool(s["key_fact"]) for s in scores if s["key_fact"] is not None]
    return round(sum(judged) / len(judged), 4) if judged else None


def _parent_answers(run: Run, parent: Run, report: dict) -> tuple[list[str], str]:
    """The parent's answer to each of the report's questions, and where they came from."""
    questions = [row["question"] for row in report["questions"]]
    earlier = read_json(parent.path / EVAL_FILE)
    if isinstance(earlier, dict) and earlier.get("settings") == report.get("settings") \
            and parent.recipe().data.system_prompt == run.recipe().data.system_prompt:
        answered = {row.get("question"): row.get("tuned") for row in earlier.get("questions") or []}
        if all(isinstance(answered.get(question), str) for question in questions):
            return [answered[question] for question in questions], REUSED
    from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
    from tuning.models.memory import free_memory

    free_memory()  # the scorecard's model goes before the parent's loads
    chat = SideBySideChat.from_run(parent.path, dequantize=False)  # as the scorecard loads a run: 4-bit kept
    answers = chat.answer_many(questions, adapter_on=True, settings=GenerationSettings(**report["settings"]))
    del chat
    free_memory()
    return answers, ANSWERED
