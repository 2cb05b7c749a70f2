"""Data: upload files (or load the Kalevala example) -> validated, deduplicated, split, previewed."""

from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from tuning.data.examples import read_jsonl, user_prompts
from tuning.data.workspace import (
    kalevala_files,
    kalevala_source,
    keep_uploads,
    new_workspace,
    prepare_dataset,
)
from tuning.errors import KanteleError
from ui.feedback_panel import build_feedback_list
from ui.generate_panel import build_generate_panel
from ui.hub_dataset_panel import build_hub_dataset_panel
from ui.label_preview_panel import build_label_preview_panel
from ui.plots import token_histogram
from ui.state import WORKSPACES_DIR, count_tokens_with

PAGE_SIZE = 20
DEFAULT_MAX_LENGTH = 256
PREVIEW_COLUMNS = ["row", "user", "assistant", "system"]
MAX_ERRORS_SHOWN = 50


def empty_dataset_state() -> dict:
    """A session's dataset before anything is loaded."""
    return {"workspace": None, "train_file": None, "validation_file": None, "rows": [], "questions": [],
            "name": None, "sources": [], "validation_sources": [], "fraction": 0.1, "documents": []}


def _preview_rows(examples: list[dict]) -> list[list]:
    rows = []
    for number, example in enumerate(examples, start=1):
        turns = {m["role"]: m["content"] for m in example["messages"]}
        user = [m["content"] for m in example["messages"] if m["role"] == "user"]
        assistant = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
        rows.append([number, user[-1] if user else "", assistant[-1] if assistant else "", turns.get("system", "")])
    return rows


def _page(rows: list[list], page: int) -> list[list]:
    start = (max(int(page or 1), 1) - 1) * PAGE_SIZE
    return rows[start : start + PAGE_SIZE]


def _stats(prepared, max_length: int) -> str:
    report = prepared.loaded.report
    lines = [f"**{report.kept} conversations** ready: {prepared.train_count} for training, "
             f"{prepared.validation_count} held out for validation.", "",
             f"- rows read: {report.rows_read}", f"- empty rows skipped: {report.empty}",
             f"- duplicates removed: {report.duplicates_removed}",
             f"- longer than {max_length} tokens (will be truncated): {report.too_long}",
             f"- shapes: {', '.join(f'{k} ({v})' for k, v in report.shape_counts.items())}"]
    lines += [f"- {note}" for note in report.notes[:10]]
    return "\n".join(lines)


def _load(files, validation_files, validation_fraction, state: dict, name: str, documents: list | None = None):
    """A new dataset from these files; `documents` are those its pairs were made from (none known: [])."""
    workspace = Path(state.get("workspace") or new_workspace(WORKSPACES_DIR))
    validation_files = validation_files or []
    try:  # one call: the limits per load count the training and validation files together
        kept = keep_uploads(workspace, [*files, *validation_files])
    except KanteleError as error:  # over the upload limits: nothing was copied
        return _show_error(state, error)
    split = len(kept) - len(validation_files)
    return prepare_and_show(workspace, kept[:split], kept[split:], validation_fraction, state, name,
                            documents=documents or [])


def _show_error(state: dict, error: KanteleError):
    shown = "\n".join(f"- {e}" for e in error.errors[:MAX_ERRORS_SHOWN])
    more = f"\n- … and {len(error.errors) - MAX_ERRORS_SHOWN} more" if len(error.errors) > MAX_ERRORS_SHOWN else ""
    what = "these rows" if shown else "this"
    message = f"### Nothing was loaded: fix {what} and upload again\n{shown or error}{more}"
    return (state, gr.update(), message, gr.update(), gr.update(), gr.update(), gr.update())


def _remembered(make_count):
    """A token counter made on first use (a refused load never loads the tokenizer) that remembers each
    conversation's count: the histogram asks again for every example the loader counted, and counting (the
    chat template, then the tokenizer) is most of a large load's time."""
    counter = functools.cache(make_count)
    counts = {}  # id -> (the list itself, its count): holding the list keeps its id from being reused

    def count(messages):
        known = counts.get(id(messages))
        if known is None or known[0] is not messages:
            known = counts[id(messages)] = (messages, counter()(messages))
        return known[1]

    return count


def prepare_and_show(workspace: Path, kept: list[Path], kept_validation: list[Path], validation_fraction: float,
                     state: dict, name: str, documents: list | None = None):
    """Clean and split the workspace's kept files; the new state and every Data-tab output. `documents`: those the
    pairs were made from (None: the state's, as when generated pairs join it)."""
    count = _remembered(count_tokens_with)
    try:
        prepared = prepare_dataset(workspace, kept, validation_fraction, seed=42,
                                   max_tokens=DEFAULT_MAX_LENGTH, count_tokens=count,
                                   validation_files=kept_validation or None)
    except KanteleError as error:
        return _show_error(state, error)
    rows = _preview_rows(prepared.loaded.examples)
    lengths = [count(e["messages"]) for e in prepared.loaded.examples]  # counted once, while loading
    state = {"workspace": str(workspace), "train_file": str(prepared.train_file),
             "validation_file": str(prepared.validation_file), "rows": rows, "name": name,
             "questions": user_prompts(read_jsonl(prepared.validation_file)),
             "sources": [str(p) for p in kept], "validation_sources": [str(p) for p in kept_validation],
             "fraction": validation_fraction,
             "documents": [str(p) for p in ((state.get("documents") or []) if documents is None else documents)]}
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    return (state, _page(rows, 1), "", _stats(prepared, DEFAULT_MAX_LENGTH),
            token_histogram(lengths, DEFAULT_MAX_LENGTH), gr.update(maximum=max(pages, 2), value=1, visible=pages > 1),
            gr.update(value=str(prepared.train_file), visible=True))


def load_kalevala(state: dict):
    """Load the shipped Kalevala example (its own validation file)."""
    train, validation = kalevala_files()
    return _load([train], [validation], 0.1, state, "Kalevala example", documents=[kalevala_source()])


def load_uploads(files, validation_fraction, state: dict):
    """Validate and split uploaded files; an invalid file changes nothing and lists its errors."""
    if not files:
        return (state, gr.update(), "Choose one or more .jsonl, .json or .csv files first.", gr.update(),
                gr.update(), gr.update(), gr.update())
    return _load([getattr(f, "name", f) for f in files], None, validation_fraction, state, "your upload")


def show_page(page, state: dict):
    """Another page of the preview."""
    return _page(state.get("rows") or [], page)


def build_data_tab(dataset_state: gr.State, owner_state: gr.State, feedback_changed: gr.State) -> None:
    """The Data tab."""
    with gr.Tab("Data", id="data"):
        gr.Markdown("Upload question–answer files in any common shape (prompt/response, question/answer, "
                    "Alpaca, ShareGPT, messages) or start from the Kalevala example.")
        with gr.Row():
            kalevala = gr.Button("Load the Kalevala example", variant="primary", elem_id="load-kalevala")
            files = gr.File(label="Your files (.jsonl, .json, .csv)", file_count="multiple",
                            file_types=[".jsonl", ".json", ".csv"])
            with gr.Column():
                fraction = gr.Slider(0.0, 0.5, value=0.1, step=0.05, label="Held out for validation")
                upload = gr.Button("Load uploaded files")
        errors = gr.Markdown(elem_id="data-errors")
        with gr.Row():
            stats = gr.Markdown(elem_id="data-stats")
            histogram = gr.Plot(label="Tokens per conversation")
        preview = gr.Dataframe(headers=PREVIEW_COLUMNS, label="Preview", wrap=True, interactive=False,
                               elem_id="data-preview")
        page = gr.Slider(1, 2, value=1, step=1, label="Page", visible=False)
        download = gr.File(label="Cleaned training set (JSONL)", visible=False)
        outputs = [dataset_state, preview, errors, stats, histogram, page, download]
        kalevala.click(load_kalevala, dataset_state, outputs)
        upload.click(load_uploads, [files, fraction, dataset_state], outputs)
        page.change(show_page, [page, dataset_state], preview)
        # Where else rows come from (the Hub, documents), then what training will make of a row.
        build_hub_dataset_panel(dataset_state, outputs, prepare_and_show, fraction)
        build_generate_panel(dataset_state, outputs, prepare_and_show)
        build_label_preview_panel(dataset_state)
        build_feedback_list(owner_state, feedback_changed)
