"""Stream every row of a batched `generate` as its own growing text (transformers' streamers take one row)."""

from __future__ import annotations

import queue
from typing import Iterator

_DONE = object()


class RowsStreamer:
    """A transformers streamer for a batch: `generate` puts the prompt, then one token per row per step;
    iterating yields a tuple with every row's text so far. A row stops growing at its first end token
    (generate keeps padding finished rows until the longest one ends)."""

    def __init__(self, tokenizer, rows: int, end_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.end_ids = end_ids
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.finished = [False] * rows
        self._prompt_seen = False
        self._queue: queue.Queue = queue.Queue()

    def put(self, value) -> None:
        """Called by generate: first with the prompt ids (skipped), then with each step's new tokens."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.tokens), -1)[:, -1].tolist()):
            if self.finished[row]:
                continue
            if token in self.end_ids:
                self.finished[row] = True
            else:
                self.tokens[row].append(token)
        self._queue.put(tuple(self.tokenizer.decode(ids, skip_special_tokens=True) for ids in self.tokens))

    def end(self) -> None:
        """Called by generate when the longest row is done (and by us when generate fails)."""
        self._queue.put(_DONE)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        while (texts := self._queue.get()) is not _DONE:
            yield texts
