"""Error and log text as a visitor may see it: without the server's own paths (tuning/guards/server_paths.py) and
inert, since it can quote a file name, a model's words or an endpoint's reply (ui/untrusted.py)."""

from __future__ import annotations

from tuning.guards.server_paths import hide_server_paths
from ui.state import APP_DATA
from ui.untrusted import inert_markdown


def for_visitor(error: BaseException | str) -> str:
    """The text to put on the page for an error or a log line."""
    return inert_markdown(hide_server_paths(str(error), APP_DATA))


def hide_paths(text: BaseException | str) -> str:
    """The text without server paths, for a component that escapes it itself (HTML built with html.escape,
    a Textbox)."""
    return hide_server_paths(str(text), APP_DATA)
