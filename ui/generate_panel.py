"""Data tab, "Generate from documents": source text -> batches of checked pairs -> review -> the dataset.
The Gradio wiring only: the review's steps are tuning/qa/session.py's; the backend and the settings come from
tuning/qa/choices.py, as they do for `python -m tuning generate`."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from tuning.config import ConfigError
from tuning.data.examples import DataError, read_jsonl, user_prompts, write_jsonl
from tuning.data.workspace import documents_named, keep_documents, merge_documents, new_workspace
from tuning.models.loading import ModelLoadError
from tuning.qa.backends import DEFAULT_REMOTE_IN_FLIGHT, LOCAL, MAX_REMOTE_IN_FLIGHT, BackendError
from tuning.qa.choices import OPENAI_COMPATIBLE, PROVIDERS, GenerationChoices, prepare_generation, qa_backend
from tuning.qa.generate import count_batches, summarize
from tuning.qa.prompts import MAX_PAIRS, MIN_PAIRS
from tuning.qa.review import REMOVED_COLUMNS, REVIEW_COLUMNS
from tuning.qa.session import ReviewSession
from tuning.qa.sources import read_documents
from tuning.qa.validate import ValidationSettings
from ui.messages import hide_paths
from ui.state import WORKSPACES_DIR

LOCAL_CHOICE = "Local model (runs here, offline)"
OPENAI_CHOICE = "OpenAI-compatible endpoint"
PROVIDERS_CHOICE = "Hugging Face Inference Providers"
BACKEND_KINDS = {LOCAL_CHOICE: LOCAL, OPENAI_CHOICE: OPENAI_COMPATIBLE, PROVIDERS_CHOICE: PROVIDERS}
USER_ERRORS = (DataError, BackendError, ConfigError, ModelLoadError)  # caps' CapError is a ConfigError
NOTHING_TICKED = "Tick 'keep' on the pairs to add (or 'Accept all unflagged')."


def upload_paths(files) -> list[Path]:
    """The paths of gradio's upload temp files (the only files a visitor names)."""
    return [Path(getattr(file, "name", file)) for file in files or []]


def read_chunks(files, pasted: str) -> list:
    """Chunks of every uploaded document and of the pasted text, within this app's caps on reading them."""
    return read_documents(upload_paths(files), pasted or "")


def backend_choices(choice: str, base_url: str, model: str, api_key: str, in_flight: float,
                    signed_in_token: str | None = None) -> dict:
    """GenerationChoices' backend fields from the panel's boxes. The Model box is for endpoints only: the local
    backend is the app's own model ('auto'), whatever the box still holds from another choice."""
    return {"backend": BACKEND_KINDS.get(choice, PROVIDERS), "model": "" if choice == LOCAL_CHOICE else model or "",
            "base_url": base_url or "", "api_key": api_key or "", "signed_in_token": signed_in_token,
            "in_flight": in_flight}


def make_backend(choice: str, base_url: str, model: str, api_key: str, in_flight: float,
                 signed_in_token: str | None = None):
    """The backend the visitor picked; the key is used for requests only, never kept or shown. Inference
    Providers take the key typed in, else the visitor's "Sign in with Hugging Face" token."""
    choices = backend_choices(choice, base_url, model, api_key, in_flight, signed_in_token)
    return qa_backend(GenerationChoices(**choices))


def dataset_questions(dataset: dict) -> list[str]:
    """Questions already in the working dataset: new pairs must not repeat them."""
    questions = []
    for key in ("train_file", "validation_file"):
        if dataset.get(key) and Path(dataset[key]).is_file():
            questions += user_prompts(read_jsonl(dataset[key]))
    return questions


def progress_html(results: list, planned: int, status: str = "") -> str:
    """An overall bar and one bar per batch (pairs kept of pairs made)."""
    summary = summarize(results)
    lines = []
    for result in results:
        where = (f"{result.chunk.source}, part {result.chunk.chunk_id + 1}" if result.chunk else "off-topic redirects")
        made = len(result.kept) + len(result.removed)
        if result.error:
            detail = f"<span class='failed'>failed after {result.attempts} attempts: {html.escape(result.error)}</span>"
        else:
            detail = (f"<progress value='{len(result.kept)}' max='{max(made, 1)}'></progress> "
                      f"{len(result.kept)} kept of {made}")
        lines.append(f"<li>batch {result.number} · {html.escape(where)} — {detail}</li>")
    head = (f"<progress value='{len(results)}' max='{max(planned, 1)}'></progress> "
            f"<b>{len(results)} of {planned} batches</b> · {html.escape(summary.as_text())}")
    note = f"<p>{html.escape(status)}</p>" if status else ""
    return f"<div id='generate-progress-body'>{head}{note}<ol>{''.join(lines)}</ol></div>"


def generate(files, pasted, choice, base_url, model, api_key, in_flight, per_batch, batches, off_topic, topic,
             judge, min_judge, duplicate_threshold, dataset: dict, review: dict,
             oauth_token: gr.OAuthToken | None = None):
    """Run the batches, streaming progress and the growing review table; pairs made so far are kept.
    gradio fills oauth_token when the visitor signed in with Hugging Face (on a Space), else None.
    The parameter names are the API's (tests find them by name)."""
    session = ReviewSession.from_state(review)
    dataset = dict(dataset)
    try:
        backend, settings = prepare_generation(GenerationChoices(
            **backend_choices(choice, base_url, model, api_key, in_flight, oauth_token.token if oauth_token else None),
            pairs_per_batch=per_batch, batches=batches, off_topic=off_topic, topic=topic, judge=judge,
            min_judge_score=min_judge, duplicate_similarity=duplicate_threshold))
        chunks = read_chunks(files, pasted)
        settings.check(len(chunks))
        workspace = Path(dataset.get("workspace") or new_workspace(WORKSPACES_DIR))
        dataset["workspace"] = str(workspace)
        # Read, so kept: the dataset names the documents its pairs come from (the scorecard's retrieval searches them).
        dataset["documents"] = merge_documents(dataset.get("documents"),
                                               keep_documents(workspace, upload_paths(files), pasted or ""))
    except USER_ERRORS as error:
        yield dataset, session.state(), progress_html([], 0, f"Nothing generated: {hide_paths(error)}"), \
            gr.update(), gr.update()
        return
    planned = count_batches(len(chunks), settings.batches) + (1 if settings.off_topic else 0)
    results = []
    yield dataset, session.state(), progress_html(results, planned, f"{len(chunks)} chunks; asking {backend.label}…"), \
        gr.update(), gr.update()
    try:
        for result in session.generate(chunks, backend, settings, dataset_questions(dataset), workspace):
            results.append(result)
            yield dataset, session.state(), progress_html(results, planned), session.table(), session.removed_table()
    except USER_ERRORS as error:
        yield dataset, session.state(), progress_html(results, planned, f"Stopped: {hide_paths(error)}"), \
            gr.update(), gr.update()
        return
    yield dataset, session.state(), progress_html(results, planned, "Done. Review the pairs below, then add them."), \
        session.table(), session.removed_table()


def accept_all_unflagged(table):
    """Tick every pair without flags."""
    return ReviewSession.tick_unflagged(_table_rows(table))


def add_to_dataset(table, dataset: dict, review: dict, prepare_and_show):
    """Append the ticked (and edited) pairs to the working dataset; the rest stay under review."""
    session = ReviewSession.from_state(review)
    workspace = Path(dataset["workspace"]) if dataset.get("workspace") else None
    outcome = session.accept(_table_rows(table), workspace)
    if not outcome.pairs:
        message = "\n".join(f"- {p}" for p in outcome.problems) or f"- {NOTHING_TICKED}"
        return (*[gr.update()] * 7, review, gr.update(), f"### Nothing was added\n{message}")
    sources = [Path(p) for p in dataset.get("sources") or []]
    if outcome.file not in sources:
        sources.append(outcome.file)
    # The dataset's documents and those the added pairs came from (even if other data was loaded since generating).
    documents = merge_documents(dataset.get("documents"),
                                documents_named(workspace, [p.provenance.get("source") for p in outcome.pairs]))
    outputs = prepare_and_show(workspace, sources, [Path(p) for p in dataset.get("validation_sources") or []],
                               dataset.get("fraction", 0.1), dataset, dataset.get("name") or "generated pairs",
                               documents=documents)
    status = f"Added {len(outcome.pairs)} pairs to the working dataset ({outcome.file.name} in your workspace)."
    return (*outputs, session.state(), session.table(), status)


def discard_unticked(table, review: dict):
    """Reject every unticked pair: it leaves the review and is listed under removed, with the reason."""
    session = ReviewSession.from_state(review)
    outcome = session.reject_unticked(_table_rows(table))
    if outcome.problems:
        return review, gr.update(), gr.update(), outcome.problems[0]
    return session.state(), session.table([True] * len(session.rows)), session.removed_table(), \
        f"Rejected {len(outcome.pairs)} pairs (listed under 'Removed pairs')."


def _table_rows(table) -> list[list]:
    """Rows of a Dataframe value (a pandas frame or a list of lists)."""
    if table is None:
        return []
    return table.values.tolist() if hasattr(table, "values") else [list(row) for row in table]


def download_review(review: dict) -> str:
    """The pairs under review as a JSONL file to keep."""
    path = Path(tempfile.mkdtemp()) / "generated-pairs.jsonl"
    write_jsonl(ReviewSession.from_state(review).rows, path)
    return str(path)


def toggle_remote(choice: str):
    """Show the endpoint fields for remote backends only."""
    remote = choice != LOCAL_CHOICE
    return gr.update(visible=choice == OPENAI_CHOICE), gr.update(visible=remote), gr.update(visible=remote), \
        gr.update(visible=remote)


def build_generate_panel(dataset_state: gr.State, data_outputs: list, prepare_and_show) -> None:
    """The panel; `data_outputs` are the Data tab's outputs that `prepare_and_show` fills."""
    review_state = gr.State(ReviewSession().state())
    with gr.Accordion("Generate pairs from documents", open=False, elem_id="generate-panel"):
        gr.Markdown("Turn your own text into question–answer pairs, 10–20 per batch. Every pair is checked "
                    "(question form, length, grounding in its passage, duplicates) and waits for your review.")
        with gr.Row():
            sources = gr.File(label="Documents (.txt, .md, .pdf)", file_count="multiple",
                              file_types=[".txt", ".md", ".pdf"], elem_id="generate-files")
            pasted = gr.Textbox(label="…or paste text", lines=6, elem_id="generate-text")
        with gr.Row():
            backend = gr.Radio([LOCAL_CHOICE, OPENAI_CHOICE, PROVIDERS_CHOICE], value=LOCAL_CHOICE,
                               label="Which LLM writes the pairs", elem_id="generate-backend")
            base_url = gr.Textbox(label="Base URL", placeholder="http://127.0.0.1:8000/v1", visible=False,
                                  elem_id="generate-base-url")
            model = gr.Textbox(label="Model", placeholder="meta-llama/Llama-3.1-8B-Instruct", visible=False,
                               elem_id="generate-model")
            api_key = gr.Textbox(label="API key / HF token (this request only; never stored)", type="password",
                                 visible=False, elem_id="generate-key")
            in_flight = gr.Slider(1, MAX_REMOTE_IN_FLIGHT, value=DEFAULT_REMOTE_IN_FLIGHT, step=1,
                                  label="Batches in flight", visible=False)
        with gr.Row():
            per_batch = gr.Slider(MIN_PAIRS, MAX_PAIRS, value=MIN_PAIRS, step=1, label="Pairs per batch")
            batches = gr.Number(value=0, precision=0, minimum=0, label="Batches (0 = one per passage)",
                                elem_id="generate-batches")
            off_topic = gr.Number(value=0, precision=0, minimum=0, maximum=20, label="Off-topic redirects to add",
                                  elem_id="generate-off-topic")
            topic = gr.Textbox(label="Subject (for redirects)", placeholder="the Kalevala", elem_id="generate-topic")
        with gr.Row():
            judge = gr.Checkbox(label="LLM judge scores each pair 1–10")
            min_judge = gr.Slider(1, 10, value=ValidationSettings.min_judge_score, step=1,
                                  label="Flag judge scores under")
            duplicate_threshold = gr.Slider(0.5, 1.0, value=ValidationSettings.duplicate_similarity, step=0.05,
                                            label="Near-duplicate similarity")
        with gr.Row():
            start = gr.Button("Generate", variant="primary", elem_id="generate-start")
            cancel = gr.Button("Cancel (keep what's made)", elem_id="generate-cancel")
        progress = gr.HTML(elem_id="generate-progress")
        table = gr.Dataframe(headers=REVIEW_COLUMNS, datatype=["bool", "str", "str", "str", "number", "str", "str"],
                             interactive=True, static_columns=[3, 4, 5, 6], wrap=True,
                             column_widths=["84px", "24%", "26%", "12%", "110px", "80px", "20%"],
                             label="Review: tick 'keep', edit any question or answer", elem_id="generate-review")
        with gr.Row():
            accept = gr.Button("Accept all unflagged", elem_id="generate-accept-unflagged")
            discard = gr.Button("Reject unticked", elem_id="generate-reject")
            add = gr.Button("Add kept pairs to the dataset", variant="primary", elem_id="generate-add")
            download = gr.DownloadButton("Download pairs under review (JSONL)")
        status = gr.Markdown(elem_id="generate-status")
        with gr.Accordion("Removed pairs and failed batches", open=False):
            removed = gr.Dataframe(headers=REMOVED_COLUMNS, interactive=False, wrap=True, elem_id="generate-removed")

    backend.change(toggle_remote, backend, [base_url, model, api_key, in_flight])
    run = start.click(generate, [sources, pasted, backend, base_url, model, api_key, in_flight, per_batch, batches,
                                 off_topic, topic, judge, min_judge, duplicate_threshold, dataset_state, review_state],
                      [dataset_state, review_state, progress, table, removed])
    cancel.click(lambda: "Cancelled: the pairs made so far are kept below.", None, status, cancels=[run])
    accept.click(accept_all_unflagged, table, table)
    add.click(lambda t, d, r: add_to_dataset(t, d, r, prepare_and_show), [table, dataset_state, review_state],
              [*data_outputs, review_state, table, status])
    discard.click(discard_unticked, [table, review_state], [review_state, table, removed, status])
    download.click(download_review, review_state, download)
