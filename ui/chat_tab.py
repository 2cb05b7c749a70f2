"""Chat: one question, two answers side by side -- the base model and the tuned adapter."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from tuning.chat import GenerationSettings, SideBySideChat
from tuning.config import ModelConfig
from tuning.models import resolve_model
from tuning.run_files import has_adapter

RUNS_DIR = Path("runs")
_chat: SideBySideChat | None = None


def newest_run() -> Path | None:
    """The most recent run folder that has a finished adapter."""
    runs = [p for p in RUNS_DIR.glob("*") if has_adapter(p)] if RUNS_DIR.is_dir() else []
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def get_chat() -> SideBySideChat:
    """Load the base model once (with the newest run's adapter when there is one)."""
    global _chat
    if _chat is None:
        run = newest_run()
        _chat = SideBySideChat.from_run(run) if run else SideBySideChat(resolve_model("auto"), ModelConfig())
    return _chat


def answer_side_by_side(question: str):
    """Stream the base answer, then the tuned one."""
    chat = get_chat()
    settings = GenerationSettings()
    base = ""
    for base in chat.stream(question, adapter_on=False, settings=settings):
        yield base, ""
    if chat.adapter_dir is None:
        yield base, "No tuned adapter yet: train one with `python -m tuning train`."
        return
    for tuned in chat.stream(question, adapter_on=True, settings=settings):
        yield base, tuned


def build_chat_tab() -> None:
    """The side-by-side chat view."""
    with gr.Tab("Chat"):
        question = gr.Textbox(label="Question", placeholder="Who compiled the Kalevala?")
        with gr.Row():
            base = gr.Textbox(label="Base model", lines=6)
            tuned = gr.Textbox(label="Tuned (base + LoRA adapter)", lines=6)
        ask = gr.Button("Ask both", variant="primary")
        ask.click(answer_side_by_side, question, [base, tuned])
        question.submit(answer_side_by_side, question, [base, tuned])
