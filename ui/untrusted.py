"""Text the app did not write -- model answers, imported scorecards and cards, a Hub id -- shown so that
nothing in it runs or loads: no raw HTML, and no Markdown image, which a browser would fetch from
wherever the text points (a tracking beacon). Links stay links: they load only when clicked.

A zero-width space goes after every '<' (an HTML tag needs a letter right there) and between '!' and '['
(a Markdown image needs them touching). The text looks the same, code blocks included, where entity
escapes would show as '&lt;' inside code; and the pane's history turns back into exactly what the model
wrote before it is sent again.
"""

from __future__ import annotations

import re

BREAK = "\u200b"  # zero-width space
_OPENERS = re.compile(r"<|!(?=\[)")
_BROKEN = re.compile(rf"(<|!){BREAK}")


def inert_markdown(text: str) -> str:
    """text as Markdown that renders as itself, minus images and HTML (both show as their source)."""
    return _OPENERS.sub(lambda match: match.group(0) + BREAK, text or "")


def original_text(shown: str) -> str:
    """The text inert_markdown was given, back from what it returned."""
    return _BROKEN.sub(lambda match: match.group(1), shown or "")
