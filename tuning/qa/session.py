"""A person's review of generated pairs, step by step: batches arrive, the person ticks, edits, rejects,
adds what they kept to the dataset, generates more. The app's Generate panel is a thin shell over this.

Every step either does all it says or changes nothing and names the problem, and a pair leaves the review only
for a file (accepted) or for `removed` with its reason (rejected, or removed by the checks): nothing is lost.
The review is kept as dataset rows, so it survives a JSON round trip (a UI's session state, review.jsonl).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tuning.data.workspace import add_accepted, save_review
from tuning.qa.generate import BatchResult, GeneratedPair, QASettings, failure_rows, generate_qa
from tuning.qa.review import KEEP, accept_unflagged, accepted_pairs, is_ticked, removed_table, review_table
from tuning.qa.sources import Chunk

REJECTED = "rejected in review"
STALE_TABLE = "The review table is out of date -- generate again."
NO_WORKSPACE = "there is no working dataset to add the pairs to -- generate again, or load your data first"


@dataclass
class ReviewOutcome:
    """What a review step did: the pairs it moved, and the file they went to; or the problems that stopped it,
    in which case nothing changed."""

    pairs: list[GeneratedPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    file: Path | None = None


@dataclass
class ReviewSession:
    """Generated pairs awaiting review, and everything that left the review other than by being accepted.

    A review table (see tuning/qa/review.py) has one row per pair in `rows`, in order; the steps that take a
    table read the person's ticks and edits from it."""

    rows: list[dict] = field(default_factory=list)  # under review, as GeneratedPair.to_row() rows
    removed: list[dict] = field(default_factory=list)  # removed by the checks, failed batches, rejected in review

    @classmethod
    def from_state(cls, state: dict | None) -> ReviewSession:
        """A session from state() -- a copy, so a step that stops half-way leaves the caller's state as it was."""
        state = state or {}
        return cls(rows=list(state.get("rows") or []), removed=list(state.get("removed") or []))

    def state(self) -> dict:
        """The session as plain JSON-ready data."""
        return {"rows": list(self.rows), "removed": list(self.removed)}

    # --- what to show -----------------------------------------------------------------------------------------

    def pairs(self) -> list[GeneratedPair]:
        """The pairs under review."""
        return [GeneratedPair.from_row(row) for row in self.rows]

    def questions(self) -> list[str]:
        """The questions under review: new pairs must not repeat them."""
        return [row["messages"][0]["content"] for row in self.rows]

    def table(self, keep: list[bool] | None = None) -> list[list]:
        """The review table; nothing ticked unless keep says so."""
        return review_table(self.pairs(), keep)

    def removed_table(self) -> list[list]:
        """Removed pairs and failed batches, with the reason."""
        return removed_table(self.removed)

    # --- the steps --------------------------------------------------------------------------------------------

    def generate(self, chunks: list[Chunk], backend, settings: QASettings, existing_questions: Iterable[str],
                 workspace: Path) -> Iterator[BatchResult]:
        """Run the batches (new questions must differ from existing_questions and from those under review);
        each batch joins the review and is saved to the workspace before it is yielded, so stopping at any
        point keeps every batch made."""
        existing = [*existing_questions, *self.questions()]
        for result in generate_qa(chunks, backend, settings, existing):
            self.add_batch(result, workspace)
            yield result

    def add_batch(self, result: BatchResult, workspace: Path | None = None) -> None:
        """A batch's kept pairs join the review; its removed pairs (and its failure, if it failed) go to removed.
        With a workspace, the pairs under review are saved there (review.jsonl)."""
        self.rows += [pair.to_row() for pair in result.kept]
        self.removed += failure_rows([result])
        if workspace is not None:
            save_review(workspace, self.rows)

    @staticmethod
    def tick_unflagged(table: list[list]) -> list[list]:
        """The table with every pair without flags ticked; the person's other ticks and edits kept."""
        return accept_unflagged(table)

    def accept(self, table: list[list], workspace: Path | None) -> ReviewOutcome:
        """The ticked pairs, with the person's edits, are appended to the workspace's accepted file; the unticked
        stay under review. Nothing changes when none is ticked (no problems, no pairs) or a ticked row can't be
        used (its problem is named)."""
        accepted, problems = accepted_pairs(table, self.pairs())
        if problems or not accepted:
            return ReviewOutcome(problems=problems)
        if workspace is None:
            return ReviewOutcome(problems=[NO_WORKSPACE])
        # Written before the pairs leave the review: a failure between the two can't lose them.
        accepted_file = add_accepted(workspace, [pair.to_row() for pair in accepted])
        self.rows = [row for row, table_row in zip(self.rows, table) if not is_ticked(table_row[KEEP])]
        save_review(workspace, self.rows)
        return ReviewOutcome(pairs=accepted, file=accepted_file)

    def reject_unticked(self, table: list[list]) -> ReviewOutcome:
        """Every unticked pair leaves the review for removed, marked REJECTED; the ticked stay. Nothing changes
        when the table no longer matches the pairs under review."""
        if len(table) != len(self.rows):
            return ReviewOutcome(problems=[STALE_TABLE])
        ticked = [is_ticked(table_row[KEEP]) for table_row in table]
        rejected = [{**row, "removed": REJECTED} for row, keep in zip(self.rows, ticked) if not keep]
        self.rows = [row for row, keep in zip(self.rows, ticked) if keep]
        self.removed = self.removed + rejected
        return ReviewOutcome(pairs=[GeneratedPair.from_row(row) for row in rejected])
