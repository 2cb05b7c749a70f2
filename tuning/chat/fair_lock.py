"""A lock handed out in the order it was asked for. The one chat model answers every visitor, one question
at a time; with a plain threading.Lock whichever waiting thread the OS wakes first wins, so under load one
visitor's question could wait while later ones were answered (p95 113 s against a p50 of 39 s)."""

from __future__ import annotations

import threading
from collections import deque


class FairLock:
    """First come, first served: release hands the lock straight to the longest waiter."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    def acquire(self) -> None:
        """Wait for this caller's turn."""
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # release() sets it when the lock is ours: it never becomes free in between

    def release(self) -> None:
        """Give the lock to the next in line, or free it."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
