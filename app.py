"""Kantele: fine-tune a small chat model on your own QA data, from one browser tab.

`demo = build_app()` at module level so tests can import it; `launch()` only under __main__.
This first version serves side-by-side answers (base | tuned) of the newest finished run;
the Data / Train / Publish tabs come with the app issue.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ui.chat_tab import build_chat_tab  # noqa: E402

TITLE = "Kantele — fine-tune a chat model on your own questions and answers"


def build_app() -> gr.Blocks:
    """The whole app as a gr.Blocks."""
    with gr.Blocks(title="Kantele") as demo:
        gr.Markdown(f"# {TITLE}")
        build_chat_tab()
    return demo


demo = build_app()

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
