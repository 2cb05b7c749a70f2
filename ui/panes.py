"""The Chat panes' messages as gradio holds them: their text, and the app's notes among them."""

from __future__ import annotations


def message_text(content) -> str:
    """A Chatbot message's text: this gradio sends content as a list of typed parts ({"type": "text", ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text") or "" if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def is_note(message: dict) -> bool:
    """An app's note in a pane (a titled message: a cut conversation, the passages used), which the model never sees."""
    return bool((message.get("metadata") or {}).get("title"))
