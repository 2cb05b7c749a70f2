"""How many requests one visitor may have in flight at once: past the cap a request is turned away at
once, instead of waiting in line ahead of everyone else's (one visitor's 20 questions made another's
1.4 s answer take 113 s)."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from tuning.guards.caps import CapError


class PerVisitorLimit:
    """Counts each visitor's requests in flight; `hold` refuses one over the cap."""

    def __init__(self, cap: Callable[[], int | None], what: str) -> None:
        self._cap = cap  # read on every request, so the owner's setting applies without a restart
        self._what = what
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, visitor: str | None) -> Iterator[None]:
        """Count this request while the block runs; CapError when the visitor already has the cap's worth."""
        cap = self._cap()
        if cap is None or visitor is None:
            yield
            return
        with self._lock:
            if self._in_flight[visitor] >= cap:
                raise CapError(f"you already have {self._in_flight[visitor]} {self._what} in progress, this app's "
                               f"limit per visitor -- wait for {'it' if cap == 1 else 'them'} to finish, then ask again")
            self._in_flight[visitor] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[visitor] -= 1
                if not self._in_flight[visitor]:
                    del self._in_flight[visitor]

    def in_flight(self, visitor: str) -> int:
        """Requests of this visitor being served now."""
        with self._lock:
            return self._in_flight[visitor]
