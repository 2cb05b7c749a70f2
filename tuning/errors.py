"""The one base of every error meant for the person using Kantele, and how a library's exception is quoted.

A `KanteleError`'s message is the whole story for a person: what went wrong, which row, field or file, and
the fix. The CLI catches it once and prints it (`tuning/cli.py`); the UI shows it in the tab that asked.
Anything else escaping is a bug, and keeps its traceback.
"""

from __future__ import annotations

MAX_QUOTED_CHARS = 300  # a server may answer with a whole HTML page; one line of it is enough


class KanteleError(Exception):
    """An error for the person using Kantele: its message names what went wrong and the fix."""


class UsageError(KanteleError, ValueError):
    """A request that can't be done as asked now (no adapter loaded, a run in the wrong state, a setting out of
    range): the message says what to do instead."""


def first_line(exc: BaseException) -> str:
    """The exception's first non-empty line, cut to MAX_QUOTED_CHARS."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:MAX_QUOTED_CHARS]


def exception_chain(exc: BaseException | None):
    """exc, then what it was raised from (or during), and so on, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
