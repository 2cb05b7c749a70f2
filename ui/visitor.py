"""Who is at this browser: a random visitor id kept in its storage, plus the Hugging Face login on a Space.

The owner is worked out on the server when the page loads and kept in session state, which a client
can't write; every handler that takes a run id passes it to the engine's ownership check.
"""

from __future__ import annotations

import gradio as gr

from tuning.runs.owner import Owner, ensure_visitor_id

VISITOR_KEY = "kantele-visitor"
# Gradio ships a BrowserState's secret to the page in its config, so the secret hides nothing; a fixed one
# only keeps stored values readable after the app restarts (a random one would orphan every visitor's runs).
BROWSER_SECRET = "kantele-browser-state"


def identify(visitor_id, profile: gr.OAuthProfile | None):
    """This browser's visitor id (made on the first visit) and the owner its requests act as."""
    visitor_id = ensure_visitor_id(visitor_id)
    return visitor_id, Owner(visitor_id, profile.username if profile else None)


def build_identity() -> tuple[gr.BrowserState, gr.State]:
    """The browser-kept visitor id and the server-kept owner (None until the page has loaded)."""
    return gr.BrowserState(None, storage_key=VISITOR_KEY, secret=BROWSER_SECRET), gr.State(None)
