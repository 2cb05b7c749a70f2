"""Chat: one question box, two conversations side by side -- the base model and base + adapter."""

from __future__ import annotations

import gradio as gr

from tuning.chat.retrieval import DEFAULT_TOP_K, RetrievalIndex, index_for_run, with_passages
from tuning.chat.side_by_side import GenerationSettings, describe_settings
from tuning.errors import KanteleError
from tuning.guards.admission import PerVisitorLimit
from tuning.guards.caps import caps
from tuning.models.loading import display_name
from tuning.qa.sources import Chunk
from tuning.runs.example import EXAMPLE_NAME, example_progress
from tuning.runs.owner import Owner
from tuning.runs.visitor_runs import example_ready
from ui.feedback_panel import build_chat_feedback, wire_chat_feedback
from ui.messages import for_visitor
from ui.panes import is_note, message_text
from ui.plots import curves_frame
from ui.state import CHAT, RUNS
from ui.untrusted import inert_markdown, original_text

BASE_ONLY = "(base model only)"
IMPORT_HELP = ("A .zip of a run folder trained elsewhere -- a cluster bundle's `runs/NAME`, without checkpoints/ -- "
               "or of its adapter folder (adapter_config.json + adapter_model.safetensors). It becomes a finished "
               "run of yours, here and in Publish.")
CUT_NOTE_TITLE = "Conversation cut to fit"
RETRIEVAL_LABEL = "With retrieval (BM25 over the run's source documents)"
PASSAGES_NOTE_TITLE = "Passages used"
NO_PASSAGE_TITLE = "No passage found"
NO_RETRIEVAL_TITLE = "Retrieval not used"
RETRIEVAL_FIX = ("To answer with retrieval, pick a run trained on pairs generated from documents (Data tab, "
                 "\"Generate pairs from documents\") or on the Kalevala example.")
# Both chat events share one gradio concurrency group this wide: each visitor's question gets into its handler
# (and waits for the one model there), while CHAT_SLOTS turns away a visitor's second question at once.
CHAT_CONCURRENCY = 8
CHAT_SLOTS = PerVisitorLimit(lambda: caps().chats_per_visitor, "questions")
DEFAULT_EXAMPLES = ["Who compiled the Kalevala?", "What is the Sampo?", "Who is Väinämöinen?",
                    "When is Kalevala Day?", "How many poems are in the 1849 Kalevala?"]


EXAMPLE_POLL_SECONDS = 3.0
NO_ADAPTER_HELP = ("**No adapter yet.** Train one in the Train tab (\"Load the Kalevala example\" in Data, then "
                   "Start), or start the shared Kalevala example here.")


def adapter_choices(owner: Owner | None, selected: str | None = None):
    """Dropdown update listing the asker's finished runs; opens on `selected`, else their own newest run, else
    the finished Kalevala example."""
    choices = [BASE_ONLY, *RUNS.finished(owner)]
    value = selected if selected in choices else (RUNS.preselected(owner) or BASE_ONLY)
    return gr.update(choices=choices, value=value)


def guidance(owner: Owner | None, adapter: str | None) -> str:
    """What the right pane needs next, when no adapter is selected: one of the asker's finished runs, the example's
    progress, or what to do."""
    view = RUNS.example_view()
    if adapter and adapter != BASE_ONLY:
        return example_progress(view) if view is not None and view.run_id == adapter else ""
    if owner is not None and RUNS.preselected(owner) not in (None, getattr(view, "run_id", None)):
        return "**No adapter selected:** pick one of your finished runs above to see what it learned."
    if view is None or view.state in ("failed", "stopped"):
        return NO_ADAPTER_HELP
    if example_ready(view):
        return f"**{EXAMPLE_NAME}** is ready: pick `{view.run_id}` above to chat with it."
    return example_progress(view)


def follow_example(owner: Owner | None, adapter: str | None, seen_ready: bool):
    """Every few seconds while the page is open: the example's progress and curves, the button to train it when
    there is none, and -- the moment it is ready, for a visitor with nothing selected -- the example selected,
    so the right pane answers with it without a reload. Stops polling once there is nothing left to follow."""
    view = RUNS.example_view()
    ready = view is not None and example_ready(view)
    select = gr.skip()
    selected_now = ready and not seen_ready and owner is not None  # None would list every run: wait for identity
    if selected_now:
        select = adapter_choices(owner, view.run_id if adapter in (None, BASE_ONLY) else adapter)
    done = seen_ready or selected_now
    no_example = view is None or view.state in ("failed", "stopped")
    curves = curves_frame(view.metrics, ("loss", "eval_loss")) if view is not None and view.metrics else gr.skip()
    shown_adapter = view.run_id if ready and adapter in (None, BASE_ONLY) else adapter
    offer = no_example and adapter in (None, BASE_ONLY)  # a visitor chatting with their own run needs no offer
    return (guidance(owner, shown_adapter), gr.update(visible=offer), gr.update(visible=view is not None), curves,
            select, done, gr.Timer(active=not (done or no_example)))


def train_the_example(owner: Owner | None):
    """Queue the shared Kalevala example (when it isn't already there) and follow it."""
    if owner is None:
        return "**Not started:** this browser is not identified yet -- reload the page", gr.skip(), gr.skip()
    try:
        RUNS.start_example(force=True)
    except KanteleError as error:
        return f"**Not started:** {for_visitor(error)}", gr.skip(), gr.skip()
    return guidance(owner, BASE_ONLY), gr.update(visible=False), gr.Timer(active=True)


def _select(owner: Owner | None, adapter: str | None, hub_adapter: str | None = None):
    if hub_adapter:
        return CHAT.select_hub_adapter(hub_adapter)
    if adapter and adapter != BASE_ONLY:
        return CHAT.select_run(RUNS.run(adapter, owner).path)
    return CHAT.select_base()


def describe_panes(owner: Owner | None, adapter: str | None, hub_adapter: str | None = None) -> str:
    """Which model and adapter each pane runs."""
    try:
        chat, wanted = _select(owner, adapter, hub_adapter)
    except (KanteleError, ValueError) as error:
        return f"**Can't load that adapter:** {for_visitor(error)}"
    name = display_name(chat.model_ref)
    quant = chat.precision
    label = hub_adapter if hub_adapter else adapter
    # Names can come from an imported adapter's config or a Hub id: shown inert, like any text we didn't write.
    tuned = f"**{inert_markdown(label)}**" if wanted else "(no adapter selected)"
    timings = chat.pane_strategy() if wanted else None  # measured once per machine, the first time it's needed
    both = f" Both panes: {timings.summary()}." if timings else ""
    return (f"**Left:** {inert_markdown(name)} ({quant}), untouched. **Right:** the same weights + LoRA adapter "
            f"{tuned}.{both}")


def _settings(max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=int(max_new_tokens), temperature=0.0 if greedy else float(temperature),
                              top_k=int(top_k), top_p=float(top_p), repetition_penalty=float(repetition_penalty))


def import_trained_adapter(upload, owner: Owner | None):
    """Add an uploaded adapter (or run) zip as a finished run of this visitor's, and select it."""
    if owner is None:
        return "**Not imported:** this browser is not identified yet -- reload the page", gr.skip()
    if not upload:
        return "", gr.skip()
    try:
        imported = RUNS.import_adapter(getattr(upload, "name", upload), owner)
    except KanteleError as error:
        return f"**Not imported:** {for_visitor(error)}", gr.skip()
    notes = "".join(f" ({note})" for note in imported.notes)
    return (f"Imported as `{imported.run_id}` on base model `{imported.base_model}`{notes}; selected above.",
            adapter_choices(owner, imported.run_id))


def _history_messages(history: list[dict]) -> list[dict]:
    """A pane's conversation as the model's messages: every turn's text as written, the app's notes left out."""
    return [{"role": m["role"], "content": original_text(message_text(m.get("content")))} for m in history
            if m.get("role") in ("user", "assistant") and not is_note(m)]


def _shown(role: str, text: str) -> dict:
    return {"role": role, "content": inert_markdown(text)}


def _cut_note(chat, messages: list[dict], settings: GenerationSettings, passages: bool = False) -> list[dict]:
    """A note for the pane when the conversation had to be cut to fit the model; none otherwise. With passages
    before the question, a question cut to its end lost them first, and the note says so."""
    fitted = chat.fit(messages, settings)
    lost = " The retrieved passages come before the question, so they were cut first." \
        if passages and fitted.cut_question else ""
    return [{"role": "assistant", "content": fitted.note() + lost, "metadata": {"title": CUT_NOTE_TITLE}}] \
        if fitted.was_cut else []


def _note(title: str, text: str, closed: bool = False) -> dict:
    """An app's note in a pane: a collapsible message the model never sees (_history_messages)."""
    return {"role": "assistant", "content": text,
            "metadata": {"title": inert_markdown(title), **({"status": "done"} if closed else {})}}


def _not_used(why: str) -> list[dict]:
    return [_note(NO_RETRIEVAL_TITLE, f"Retrieval was not used for this question: {why}. Both panes were asked "
                                      f"the question alone. {RETRIEVAL_FIX}")]


def _documents(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} documents"


def _passages_note(index: RetrievalIndex, passages: list[Chunk]) -> list[dict]:
    """The passages both panes were given (numbered as in the prompt), each with its file and character span,
    the documents' text shown inert."""
    documents = _documents(sorted({p.source for p in index.passages}))
    if not passages:
        return [_note(f"{NO_PASSAGE_TITLE} (BM25 over {len(index.passages)} passages of {documents})",
                      "No passage shares a word with the question: both panes were asked the question alone.")]
    shown = [f"**[{n}] {inert_markdown(p.source)}**, characters {p.start:,}–{p.end:,}\n\n"
             + "\n".join(f"> {inert_markdown(line)}" for line in p.text.strip().splitlines())
             for n, p in enumerate(passages, start=1)]
    title = f"{PASSAGES_NOTE_TITLE} (BM25, top {len(passages)} of {len(index.passages)} from {documents})"
    return [_note(title, "\n\n".join(["Both panes read these passages before the question:", *shown]), closed=True)]


def _retrieved(question: str, owner: Owner | None, adapter: str | None, hub_adapter: str | None):
    """With retrieval on: what both panes are asked (the question with the run's top passages before it) and the
    note saying which passages, or why there were none."""
    if hub_adapter:
        return question, _not_used("a Hub adapter comes without the documents its pairs were made from")
    if not adapter or adapter == BASE_ONLY:
        return question, _not_used("no run is selected (base model only), so there are no documents to search")
    try:
        index = index_for_run(RUNS.run(adapter, owner).path)
    except (KanteleError, ValueError, OSError) as error:
        return question, _not_used(f"the run's source documents can't be read ({inert_markdown(for_visitor(error))})")
    if index is None:
        return question, _not_used(f"run `{inert_markdown(adapter)}` keeps no source documents -- its pairs were "
                                   "not generated from documents here")
    passages = index.top([question], DEFAULT_TOP_K)[0]
    return with_passages(question, passages), _passages_note(index, passages)


def ask_both(question: str, base_history: list, tuned_history: list, owner: Owner | None, adapter: str,
             hub_adapter: str, max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty,
             with_retrieval: bool = False, request: gr.Request = None):
    """Stream both answers at once (one batched generate), each pane keeping its own conversation; with retrieval,
    both are asked the question with the run's best passages before it, and each pane notes which.
    One question per visitor at a time: another is refused at once rather than queued ahead of others."""
    question = (question or "").strip()
    if not question:
        yield base_history, tuned_history, ""
        return
    try:
        with CHAT_SLOTS.hold(getattr(request, "session_hash", None)):
            settings = _settings(max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty)
            yield from _answer_both(question, base_history, tuned_history, owner, adapter, hub_adapter, settings,
                                    bool(with_retrieval))
    except (KanteleError, ValueError) as error:  # CapError is a ValueError
        raise gr.Error(for_visitor(error)) from None


def _answer_both(question: str, base_history: list, tuned_history: list, owner: Owner | None, adapter: str,
                 hub_adapter: str, settings: GenerationSettings, with_retrieval: bool = False):
    chat, wanted = _select(owner, adapter, hub_adapter)
    # The panes show the question as typed; this turn's prompt carries the passages (later turns see the question).
    asked, notes = _retrieved(question, owner, adapter, hub_adapter) if with_retrieval else (question, [])
    base_messages = [*_history_messages(base_history), {"role": "user", "content": asked}]
    tuned_messages = [*_history_messages(tuned_history), {"role": "user", "content": asked}]
    with_them = asked != question
    base_history = [*base_history, _shown("user", question), *notes,
                    *_cut_note(chat, base_messages, settings, with_them), _shown("assistant", "")]
    tuned_history = [*tuned_history, _shown("user", question), *notes,
                     *_cut_note(chat, tuned_messages, settings, with_them), _shown("assistant", "")]
    if wanted is None:
        tuned_history[-1] = {"role": "assistant", "content": guidance(owner, adapter) or NO_ADAPTER_HELP}
        for text in chat.stream(base_messages, adapter_on=False, settings=settings):
            base_history[-1] = _shown("assistant", text)
            yield base_history, tuned_history, ""
        return
    for base_text, tuned_text in chat.stream_both(base_messages, tuned_messages, settings, adapter=wanted):
        base_history[-1] = _shown("assistant", base_text)
        tuned_history[-1] = _shown("assistant", tuned_text)
        yield base_history, tuned_history, ""


def retry_last(base_history: list, tuned_history: list, owner: Owner | None, adapter, hub_adapter, max_new_tokens,
               greedy, temperature, top_k, top_p, repetition_penalty, with_retrieval: bool = False,
               request: gr.Request = None):
    """Ask the last question again (useful with sampling on), with retrieval as the switch says now."""
    users = [i for i, m in enumerate(base_history) if m["role"] == "user"]
    if not users:
        yield base_history, tuned_history, ""
        return
    cut = users[-1]
    last = original_text(message_text(base_history[cut].get("content")))
    tuned_cut = max((i for i, m in enumerate(tuned_history) if m["role"] == "user"), default=len(tuned_history))
    yield from ask_both(last, base_history[:cut], tuned_history[:tuned_cut], owner, adapter, hub_adapter,
                        max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty, with_retrieval,
                        request)


def example_samples(dataset: dict) -> gr.Dataset:
    """Example questions from the loaded dataset's held-out split (the Kalevala ones by default)."""
    questions = (dataset or {}).get("questions") or DEFAULT_EXAMPLES
    return gr.Dataset(samples=[[q] for q in questions[:8]])


def build_chat_tab(dataset_state: gr.State, owner_state: gr.State, feedback_changed: gr.State) -> dict:
    """The Chat tab; returns the components other tabs hook into."""
    with gr.Tab("Chat", id="chat"):
        with gr.Row():
            adapter = gr.Dropdown([BASE_ONLY], value=BASE_ONLY, label="Adapter (finished runs)",
                                  elem_id="adapter-picker", scale=3)
            hub_adapter = gr.Textbox(label="…or a Hub adapter id", placeholder="user/my-adapter", scale=2,
                                     elem_id="hub-adapter")
            refresh = gr.Button("Refresh runs", scale=1)
        with gr.Accordion("Import a trained adapter (.zip)", open=False):
            gr.Markdown(IMPORT_HELP)
            upload = gr.File(label="Adapter or run (.zip)", file_types=[".zip"], type="filepath",
                             elem_id="import-adapter-file")
            imported = gr.Markdown(elem_id="import-adapter-status")
        note = gr.Markdown(elem_id="pane-note")
        with gr.Row():
            example_status = gr.Markdown(elem_id="example-status")
            train_example = gr.Button("Train the Kalevala example", visible=False, elem_id="train-example",
                                      scale=0, min_width=220)
        with gr.Accordion("The Kalevala example's training curves", open=False, visible=False) as example_curves:
            example_plot = gr.LinePlot(x="step", y="value", color="series", height=220, elem_id="example-curves")
        with gr.Row():
            base_pane = gr.Chatbot(label="Base model", elem_id="base-pane", height=360)
            tuned_pane = gr.Chatbot(label="Tuned (base + adapter)", elem_id="tuned-pane", height=360)
        feedback = build_chat_feedback()
        with gr.Row():
            question = gr.Textbox(placeholder="Ask both models… e.g. Who compiled the Kalevala?", show_label=False,
                                  scale=5, elem_id="chat-input")
            send = gr.Button("Ask both", variant="primary", scale=1, elem_id="ask-both")
        with gr.Row():
            retry = gr.Button("Retry")
            clear = gr.Button("Clear", elem_id="clear-chat")
            with_retrieval = gr.Checkbox(value=False, label=RETRIEVAL_LABEL, elem_id="with-retrieval")
        examples = gr.Dataset(components=[question], samples=[[q] for q in DEFAULT_EXAMPLES],
                              label="Example questions")
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                max_new_tokens = gr.Slider(16, 512, value=128, step=16, label="Max new tokens")
                greedy = gr.Checkbox(value=True, label="Greedy (deterministic)")
                temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature")
            with gr.Row():
                top_k = gr.Slider(1, 200, value=50, step=1, label="Top-k")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
                repetition_penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="Repetition penalty")
        controls = [max_new_tokens, greedy, temperature, top_k, top_p, repetition_penalty]
        # The switch goes last: API callers that pass the other values keep working (it defaults to off).
        inputs = [question, base_pane, tuned_pane, owner_state, adapter, hub_adapter, *controls, with_retrieval]
        outputs = [base_pane, tuned_pane, question]

        chat_events = {"concurrency_limit": CHAT_CONCURRENCY, "concurrency_id": "chat"}
        send.click(ask_both, inputs, outputs, **chat_events)
        question.submit(ask_both, inputs, outputs, **chat_events)
        retry.click(retry_last, [base_pane, tuned_pane, owner_state, adapter, hub_adapter, *controls, with_retrieval],
                    outputs, **chat_events)
        clear.click(lambda: ([], [], ""), None, outputs)
        wire_chat_feedback(feedback, [base_pane, tuned_pane], owner_state, adapter, hub_adapter, controls,
                           lambda *values: describe_settings(_settings(*values)), BASE_ONLY, feedback_changed)
        for asked in (send.click, question.submit, retry.click, clear.click):  # a new exchange: the old note goes
            asked(lambda: ("", gr.update(visible=False)), None, [feedback["status"], feedback["box"]])
        examples.click(lambda sample: sample[0], examples, question)
        refresh.click(adapter_choices, [owner_state, adapter], adapter)
        upload.upload(import_trained_adapter, [upload, owner_state], [imported, adapter])
        adapter.change(describe_panes, [owner_state, adapter, hub_adapter], note)
        hub_adapter.submit(describe_panes, [owner_state, adapter, hub_adapter], note)
        dataset_state.change(example_samples, dataset_state, examples)

        seen_ready = gr.State(False)
        example_timer = gr.Timer(EXAMPLE_POLL_SECONDS)
        example_timer.tick(follow_example, [owner_state, adapter, seen_ready],
                           [example_status, train_example, example_curves, example_plot, adapter, seen_ready,
                            example_timer])
        train_example.click(train_the_example, owner_state, [example_status, train_example, example_timer])
        adapter.change(guidance, [owner_state, adapter], example_status)
    return {"adapter": adapter, "note": note, "question": question, "guidance": example_status}
