"""Turning a library's exception into the short text our one-line error messages quote."""

from __future__ import annotations

MAX_QUOTED_CHARS = 300  # a server may answer with a whole HTML page; one line of it is enough


def first_line(exc: BaseException) -> str:
    """The exception's first non-empty line, cut to MAX_QUOTED_CHARS."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:MAX_QUOTED_CHARS]
