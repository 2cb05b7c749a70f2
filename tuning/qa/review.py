"""Human review of generated pairs: a table to accept, edit or reject each one, then the accepted set."""

from __future__ import annotations

from dataclasses import replace

from tuning.qa.generate import GeneratedPair

REVIEW_COLUMNS = ["keep", "question", "answer", "flags", "grounding", "judge", "from"]
REMOVED_COLUMNS = ["question", "answer", "why removed", "from"]
KEEP, QUESTION, ANSWER, FLAGS = 0, 1, 2, 3
EDITABLE_COLUMNS = (KEEP, QUESTION, ANSWER)
NO_FLAGS = "—"


def describe_provenance(pair: GeneratedPair) -> str:
    """'source.md · part 3 · chars 1200–2650 · batch 4' (or the off-topic origin)."""
    where = pair.provenance
    if "chunk_id" not in where:
        return f"{where.get('source', pair.kind)} · batch {where.get('batch', '?')}"
    return (f"{where['source']} · part {where['chunk_id'] + 1} · chars {where['start']}–{where['end']} · "
            f"batch {where.get('batch', '?')}")


def review_table(pairs: list[GeneratedPair], keep: list[bool] | None = None) -> list[list]:
    """One row per pair; nothing is kept until the reviewer ticks it (or accepts all unflagged)."""
    keep = keep or [False] * len(pairs)
    return [[kept, p.question, p.answer, ", ".join(p.flags) or NO_FLAGS,
             "" if p.grounding is None else round(p.grounding, 2),
             "" if p.judge_score is None else f"{p.judge_score}/10 {p.judge_reason}".strip(),
             describe_provenance(p)] for kept, p in zip(keep, pairs)]


def removed_table(removed: list[dict]) -> list[list]:
    """One row per removed pair or failed batch (failure_rows' rows, and pairs rejected in review), with the reason."""
    table = []
    for row in removed:
        if "failed_batch" in row:
            table.append(["", (row.get("raw_reply") or "")[:300], f"batch {row['failed_batch']} failed: {row['error']}",
                          f"{row.get('source', '')} part {row.get('chunk_id', 0) + 1}"])
        else:
            pair = GeneratedPair.from_row(row)
            table.append([pair.question, pair.answer, pair.removed, pair.provenance.get("source", "")])
    return table


def accept_unflagged(table: list[list]) -> list[list]:
    """Tick every pair without flags; leave the reviewer's other choices alone."""
    return [[True if row[FLAGS] == NO_FLAGS else is_ticked(row[KEEP]), *row[1:]] for row in table]


def accepted_pairs(table: list[list], pairs: list[GeneratedPair]) -> tuple[list[GeneratedPair], list[str]]:
    """The ticked pairs with the reviewer's edits, and a problem per ticked row that can't be used."""
    if len(table) != len(pairs):
        return [], [f"the review table has {len(table)} rows for {len(pairs)} pairs -- generate again"]
    accepted, problems = [], []
    for number, (row, pair) in enumerate(zip(table, pairs), start=1):
        if not is_ticked(row[KEEP]):
            continue
        question, answer = str(row[QUESTION] or "").strip(), str(row[ANSWER] or "").strip()
        missing = [name for name, text in (("question", question), ("answer", answer)) if not text]
        if missing:
            problems.append(f"row {number}: the {' and '.join(missing)} is empty -- write it or untick 'keep'")
            continue
        edited = (question, answer) != (pair.question, pair.answer)
        accepted.append(replace(pair, question=question, answer=answer,
                                provenance={**pair.provenance, "edited": True} if edited else pair.provenance))
    return accepted, problems


def is_ticked(value: object) -> bool:
    """A checkbox cell: True, or the strings a table may hand back."""
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}
