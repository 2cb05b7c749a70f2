"""A Train-tab panel that makes a file of the visitor's current run on a click: help, a button, a note, the file."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr


def run_download_panel(title: str, help_text: str, button_label: str, file_label: str, elem_id: str,
                       make: Callable, inputs: list) -> None:
    """An accordion whose button calls make(*inputs) -> (markdown note, file path or None); elem ids ELEM_ID,
    ELEM_ID-status, ELEM_ID-file (the browser tests find them by these)."""
    with gr.Accordion(title, open=False):
        gr.Markdown(help_text)
        button = gr.Button(button_label, elem_id=elem_id)
        status = gr.Markdown(elem_id=f"{elem_id}-status")
        made = gr.File(label=file_label, interactive=False, elem_id=f"{elem_id}-file")
    button.click(make, inputs, [status, made])
