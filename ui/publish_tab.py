"""Publish: the run's files and its model card, ready for the Hub."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from tuning.model_card import render_model_card
from tuning.run_files import ADAPTER_DIR, CARD_FILE, CHECKPOINTS_DIR
from ui.chat_tab import finished_runs
from ui.state import QUEUE

PUSH_UNAVAILABLE = ("Pushing to the Hugging Face Hub is not built yet: this version shows exactly what would be "
                    "uploaded (the adapter files and this card). Until then, upload the adapter folder with "
                    "`hf upload YOUR-NAME/REPO runs/<run>/adapter`.")


def run_files_table(run_dir: Path) -> list[list]:
    """The files an adapter push would upload: the adapter folder plus the card."""
    rows = []
    for path in sorted((run_dir / ADAPTER_DIR).rglob("*")):
        # PEFT writes a stub README.md into the adapter folder; the push replaces it with our card.
        if path.is_file() and CHECKPOINTS_DIR not in path.parts and path.name != CARD_FILE:
            rows.append([str(path.relative_to(run_dir / ADAPTER_DIR)), f"{path.stat().st_size / 1024:,.1f} KB"])
    rows.append([CARD_FILE, "generated (preview below)"])
    return rows


def show_run(run_id: str | None, repo_id: str):
    """Files and rendered card of a finished run."""
    if not run_id:
        return [], "Finish a training run first: its adapter and card appear here."
    run_dir = QUEUE.run_dir(run_id)
    return run_files_table(run_dir), card_preview(render_model_card(run_dir, repo_id or "YOUR-NAME/YOUR-ADAPTER"))


def card_preview(card: str) -> str:
    """The card as a page shows it on the Hub: metadata in a box, then the rendered body."""
    _, front, body = card.split("---\n", 2)
    return f"**Card metadata**\n```yaml\n{front}```\n{body}"


def refresh_runs(current: str | None):
    """Dropdown update listing finished runs."""
    runs = finished_runs()
    return gr.update(choices=runs, value=current if current in runs else (runs[0] if runs else None))


def build_publish_tab() -> dict:
    """The Publish tab."""
    with gr.Tab("Publish", id="publish") as tab:
        with gr.Row():
            run = gr.Dropdown([], label="Run", elem_id="publish-run")
            repo = gr.Textbox(value="YOUR-NAME/kalevala-adapter", label="Hub repository (user/name)")
        files = gr.Dataframe(headers=["file", "size"], label="Files to upload", interactive=False,
                             elem_id="publish-files")
        gr.Button("Push to the Hub", interactive=False, elem_id="push-button")
        gr.Markdown(PUSH_UNAVAILABLE)
        card = gr.Markdown(label="Model card", elem_id="model-card")
        tab.select(refresh_runs, run, run)
        run.change(show_run, [run, repo], [files, card])
        repo.submit(show_run, [run, repo], [files, card])
    return {"run": run}
