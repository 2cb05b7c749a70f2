"""Stream every row of a batched `generate` as its own growing text (transformers' streamers take one row),
also when the rows come from several generates at once (one per pane, each on its own thread)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

_DONE = object()


class MergedRows:
    """Every row's text so far, fed by one batched generate (`streamer(None)`) or by one generate per row
    (`streamer(row)`); iterating yields a tuple of all rows' texts each time any row grows, until `close()`.
    A row stops growing at its first end token (generate keeps padding finished rows until the longest ends)."""

    def __init__(self, tokenizer, rows: int, end_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.end_ids = end_ids
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.texts = [""] * rows
        self.finished = [False] * rows
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # feeds on different threads update different rows of one snapshot

    def streamer(self, row: int | None) -> _RowsFeed:
        """A transformers streamer feeding every row (a batched generate) or just `row` (its own generate)."""
        return _RowsFeed(self, None if row is None else [row])

    def _add(self, rows: list[int], tokens: list[int]) -> None:
        with self._lock:
            for row, token in zip(rows, tokens):
                if self.finished[row]:
                    continue
                if token in self.end_ids:
                    self.finished[row] = True
                else:
                    self.tokens[row].append(token)
                    self.texts[row] = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
            snapshot = tuple(self.texts)
        self._queue.put(snapshot)

    def close(self) -> None:
        """Every generate has ended (or failed): iteration stops after what was already fed."""
        self._queue.put(_DONE)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        while (texts := self._queue.get()) is not _DONE:
            yield texts


class _RowsFeed:
    """The streamer one generate is given: `put` gets the prompt ids first (skipped), then each step's tokens."""

    def __init__(self, merged: MergedRows, rows: list[int] | None) -> None:
        self.merged = merged
        self.rows = rows if rows is not None else list(range(len(merged.tokens)))
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.merged._add(self.rows, value.reshape(len(self.rows), -1)[:, -1].tolist())

    def end(self) -> None:
        """generate is done; the caller closes the merged stream once every generate is."""
