"""The Train tab's "Train again with my corrections": a finished run continued on the visitor's chat feedback, by an
SFT top-up (the corrections with a replay of the run's own rows) or DPO (the preference pairs votes and corrections
make). The new run is followed by the tab's progress, curves and scorecard like any other."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from tuning.config import DPO, SFT
from tuning.errors import KanteleError
from tuning.feedback.retrain import REPLAY_MIN, REPLAY_PER_CORRECTION, feedback_counts, retrain_recipe
from tuning.runs.owner import Owner
from ui.messages import for_visitor
from ui.state import RUNS, feedback_workspace

METHOD_CHOICES = [("SFT top-up: learn the corrections, replaying the run's own data so it doesn't forget", SFT),
                  ("DPO: prefer the corrected and voted-for answers over the rejected ones", DPO)]
HOW = (f"Both continue the picked run's adapter and are scored on its held-out questions, against the base model and "
       f"against the run itself. The SFT top-up trains on each correction beside {REPLAY_PER_CORRECTION} of the run's "
       f"own rows (at least {REPLAY_MIN}); DPO learns from every vote between two different answers and every "
       "correction (preferred over the tuned answer).")
KNOB_ERRORS = (KanteleError, ValueError, OverflowError)


def retrain_view(owner: Owner | None, parent: str | None):
    """What the visitor's feedback gives each method, and their finished runs to continue (the picked one kept)."""
    if owner is None:
        return "", gr.skip()
    counts = feedback_counts(feedback_workspace(owner))
    runs = RUNS.finished(owner)
    picked = parent if parent in runs else RUNS.preselected(owner)
    text = f"**Your feedback:** {counts.summary()}." if counts.items else (
        "**No feedback yet:** vote under the answers in Chat, or press \"Correct the answer\" and save a better one.")
    return f"{text}\n\n{HOW}", gr.update(choices=runs, value=picked)


def start_retrain(parent: str | None, method: str, owner: Owner | None):
    """Queue a child of the picked run trained on this visitor's feedback; (its id for the tab to follow, a line)."""
    if owner is None:
        return gr.skip(), "**Not started:** this browser is not identified yet -- reload the page"
    if not parent:
        return gr.skip(), "**Not started:** pick a finished run to continue (train one first)"
    recipe = None
    try:
        RUNS.check_room(owner)  # before the feedback is copied for a run: a refused click leaves no file behind
        recipe = retrain_recipe(RUNS.run(parent, owner).path, feedback_workspace(owner), method)
        RUNS.preflight(recipe)
        run_id = RUNS.submit(recipe, label=f"{method}-on-{parent[16:]}" if len(parent) > 16 else method, asker=owner)
    except KNOB_ERRORS as error:
        for snapshot in recipe.data.train if recipe is not None else []:  # over a cap: its copy goes too
            Path(snapshot).unlink(missing_ok=True)
        return gr.skip(), f"**Not started:** {for_visitor(error)}"
    return run_id, f"Submitted run `{run_id}`: {'an SFT top-up' if method == SFT else 'DPO'} of `{parent}` on your feedback."


def build_retrain_panel(owner_state: gr.State, run_state, progress, feedback_changed: gr.State) -> None:
    """The panel; a started run becomes the tab's run (run_state), its line shows in `progress`."""
    with gr.Accordion("Train again with my corrections", open=False, elem_id="retrain-panel") as panel:
        summary = gr.Markdown(elem_id="retrain-summary")
        with gr.Row():
            parent = gr.Dropdown([], label="Continue this finished run", elem_id="retrain-parent", scale=2)
            method = gr.Radio(METHOD_CHOICES, value=SFT, label="How", elem_id="retrain-method", scale=3)
        start = gr.Button("Train again with my corrections", variant="primary", elem_id="retrain-start")
    view = [summary, parent]
    for event in (panel.expand, feedback_changed.change, owner_state.change):
        event(retrain_view, [owner_state, parent], view)
    start.click(start_retrain, [parent, method, owner_state], [run_state, progress])
