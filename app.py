"""Kantele: fine-tune a small chat model on your own QA data, from one browser tab.

`demo = build_app()` at module level so tests can import it; `launch()` only under __main__.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from tuning.errors import KanteleError, first_line  # noqa: E402
from tuning.guards.caps import caps  # noqa: E402
from tuning.hardware.device import startup_line  # noqa: E402
from ui.chat_tab import adapter_choices, build_chat_tab, describe_panes, guidance  # noqa: E402
from ui.data_tab import build_data_tab, empty_dataset_state  # noqa: E402
from ui.publish_tab import build_publish_tab  # noqa: E402
from ui.scorecard import picked_question  # noqa: E402
from ui.state import RUNS  # noqa: E402
from ui.train_tab import build_train_tab  # noqa: E402
from ui.upload_guard import cache_cleaning, launch_guards  # noqa: E402
from ui.visitor import BROWSER_SECRET, build_identity, identify  # noqa: E402

INTRO = ("# Kantele\nFine-tune a small chat model on your own questions and answers: **Data → Train → "
         "Chat side by side → Publish**. Try it with the Kalevala, Finland's national epic.")


def build_app() -> gr.Blocks:
    """The whole app as a gr.Blocks."""
    with gr.Blocks(title="Kantele", delete_cache=cache_cleaning()) as demo:
        gr.Markdown(INTRO)
        dataset_state = gr.State(empty_dataset_state())
        # The visitor's run id lives in the browser, so a reload re-attaches to the running job.
        run_state = gr.BrowserState(None, storage_key="kantele-run", secret=BROWSER_SECRET)
        visitor_state, owner_state = build_identity()
        feedback_changed = gr.State(None)  # set when Chat keeps feedback: the Data tab's list and Train follow
        with gr.Tabs() as tabs:
            chat = build_chat_tab(dataset_state, owner_state, feedback_changed)
            build_data_tab(dataset_state, owner_state, feedback_changed)
            train = build_train_tab(dataset_state, run_state, owner_state, feedback_changed)
            build_publish_tab(owner_state)
        train["compare"].click(lambda run_id, owner: (gr.Tabs(selected="chat"), adapter_choices(owner, run_id)),
                               [run_state, owner_state], [tabs, chat["adapter"]])
        train["scorecard_table"].select(picked_question, None, chat["question"]).then(
            lambda: gr.Tabs(selected="chat"), None, tabs)
        demo.load(train["fill_knobs"], train["preset"], list(train["knobs"].values()))
        demo.load(identify, visitor_state, [visitor_state, owner_state]).then(
            adapter_choices, owner_state, chat["adapter"]).then(
            describe_panes, [owner_state, chat["adapter"]], chat["note"]).then(
            guidance, [owner_state, chat["adapter"]], chat["guidance"])
    # On a shared app a flood is turned away at the door ("queue is full") instead of growing without end.
    demo.queue(max_size=caps().queue_size)
    return demo


demo = build_app()


def start_background_work() -> None:
    """What runs with no page open: the queue's supervisor (queued runs start by themselves, also after a
    restart) and the shared Kalevala example (KANTELE_EXAMPLE=auto|off), queued when it isn't there yet."""
    RUNS.start_supervisor()
    try:
        example = RUNS.start_example()
    except KanteleError as error:  # a bad KANTELE_EXAMPLE or recipe: the app still serves everything else
        print(f"Kalevala example not started: {first_line(error)}", flush=True)
        return
    if example:
        print(f"Kalevala example: run {example}", flush=True)


def import_heavy_libraries() -> None:
    """Import torch/transformers once, up front: handlers run in threads, and two threads importing
    transformers' lazy modules at the same time can see a half-initialized module."""
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401


if __name__ == "__main__":
    import_heavy_libraries()
    print(startup_line(), flush=True)  # the Space's log says what hardware really serves it
    start_background_work()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **launch_guards())
