"""Train: pick a model and a recipe, see the cost up front, start, watch, stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.components import Component

from tuning.config import (
    PROBE_NAMES,
    REPORT_TO_NAMES,
    ConfigError,
    RecipeConfig,
    apply_settings,
    load_recipe,
    settings_of,
)
from tuning.guards.caps import CapError, is_shared
from tuning.hardware.device import space_gpu_warning
from tuning.models.loading import GPU_DEFAULT_MODEL, ModelLoadError, has_gpu
from tuning.models.names import check_model_name
from tuning.runs.caps import check_estimate_caps, check_recipe_caps, check_scorecard_caps
from tuning.runs.example import EXAMPLE_NAME
from tuning.runs.files import COMPLETED, QUEUED, RUNNING, SCORECARD_PHASE
from tuning.runs.owner import Owner
from ui.cluster_export import build_export_panel
from ui.messages import for_visitor, hide_paths
from ui.plots import curves_frame
from ui.retrain_panel import build_retrain_panel
from ui.scorecard import build_scorecard, refresh_scorecard
from ui.state import CHAT, CONFIGS_DIR, RUNS
from ui.storage_note import storage_note
from ui.tracking_panel import build_tracking_panel

MODEL_CHOICES = ["auto", "embedded", GPU_DEFAULT_MODEL]
MODEL_LABEL = "Base model (Hub id, local folder, 'embedded'; auto = by hardware)"
SHARED_MODEL_LABEL = "Base model (Hub id or 'embedded'; auto = by hardware)"  # no local folders on a shared app
PROBES_INFO = ("after the held-out questions: forgetting (general skills kept), limits (off-topic and unanswerable "
               "questions), memorised (facts or sentences), retrieval (would BM25 over the source documents have "
               "done it)")
REPORT_TO_INFO = ("besides the curves here: TensorBoard event files and a trackio store, in the run's logs/ folder "
                  "(open them from 'Tracking logs' below)")
POLL_SECONDS = 2.0
PREFERENCE_CURVES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
SHORT_RUN_STEPS = 50
# What a knob a visitor typed can raise (int(inf) is an OverflowError): each is shown, none is a crash.
KNOB_ERRORS = (ConfigError, ModelLoadError, ValueError, OverflowError)


def model_label() -> str:
    """The model knob's label: a shared app takes no local folders."""
    return SHARED_MODEL_LABEL if is_shared() else MODEL_LABEL


def _number(label: str, **settings) -> Callable[[], gr.Number]:
    return lambda: gr.Number(label=label, render=False, **settings)


# The knobs that are recipe keys, each built here and only here, by the key it sets (build_train_tab lays them
# out by key). This order is the tab's HTTP API: /preset_values returns the knobs in it, /show_estimate and
# /start_training take them in it after the preset, and API clients address them by position -- so a new knob
# goes at the end.
KNOBS: dict[str, Callable[[], Component]] = {
    "model.name": lambda: gr.Dropdown(MODEL_CHOICES, value="auto", allow_custom_value=True, label=model_label(),
                                      render=False),
    "training.epochs": _number("Epochs", minimum=0.1),
    "training.max_steps": _number("Max steps (-1: use epochs)", precision=0, elem_id="max-steps"),
    "training.learning_rate": _number("Learning rate"),
    "lora.r": _number("LoRA r", precision=0, minimum=1),
    "lora.alpha": _number("LoRA alpha", precision=0, minimum=1),
    "lora.dropout": _number("LoRA dropout", minimum=0, maximum=0.9),
    "training.batch_size": _number("Batch size", precision=0, minimum=1),
    "training.grad_accum": _number("Grad accumulation", precision=0, minimum=1),
    "data.max_length": _number("Max length (tokens)", precision=0, minimum=16),
    "model.load_in_4bit": lambda: gr.Checkbox(value=True, label="4-bit base weights (QLoRA)", render=False),
    # The scorecard answers every question twice after training: a sample makes a quick run's quick.
    "training.scorecard_questions": _number("Scorecard questions (0: all held-out; N: quick, N of each probe too)",
                                            precision=0, minimum=0, elem_id="scorecard-questions"),
    "training.probes": lambda: gr.CheckboxGroup(list(PROBE_NAMES), label="Scorecard probes", info=PROBES_INFO,
                                                render=False, elem_id="scorecard-probes"),
    "training.report_to": lambda: gr.CheckboxGroup(list(REPORT_TO_NAMES), label="Also log to", info=REPORT_TO_INFO,
                                                   render=False, elem_id="report-to"),
}


def knob_settings(values) -> dict[str, Any]:
    """The knobs' values as an event passes them (in KNOBS order), by recipe key."""
    return dict(zip(KNOBS, values, strict=True))


def preset_names() -> list[str]:
    """Recipe files shipped in configs/."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def default_preset() -> str:
    """The GPU recipe where there is a GPU, the CPU one elsewhere."""
    return "kalevala-tinyllama" if has_gpu() else "kalevala"


def preset_settings(name: str) -> dict[str, Any]:
    """A preset's value of every knob, by recipe key."""
    return settings_of(load_recipe(CONFIGS_DIR / f"{name}.yaml"), KNOBS)


def knobs_filler(knobs: dict[str, Component]) -> Callable[[str], dict[Component, Any]]:
    """The handler that sets the knobs to a preset's values; its outputs are the knobs' components, in KNOBS
    order (the order /preset_values answers in)."""
    def preset_values(name: str) -> dict[Component, Any]:  # its name is its HTTP API name
        return {knobs[key]: value for key, value in preset_settings(name).items()}

    return preset_values


def build_recipe(preset: str, settings: dict[str, Any], dataset: dict) -> RecipeConfig:
    """The preset with the knobs' settings applied -- checked as `--set` checks them -- and the session's
    dataset as its data."""
    if not dataset.get("train_file"):
        raise ConfigError("load a dataset first (Data tab: 'Load the Kalevala example' or your files)")
    recipe = apply_settings(load_recipe(CONFIGS_DIR / f"{preset}.yaml"), settings)
    # Before anything reads the disk for the model: a shared app names no local folder.
    recipe.model.name = check_model_name(recipe.model.name)
    recipe.data.train, recipe.data.validation = [dataset["train_file"]], [dataset["validation_file"]]
    # The documents this session's pairs were made from (generated, or the Kalevala's), never the preset's.
    recipe.data.sources = [str(path) for path in dataset.get("documents") or []]
    if 0 < recipe.training.max_steps < SHORT_RUN_STEPS:
        recipe.training.logging_steps = 1  # a short run still draws a curve
    return recipe


def gpu_warning() -> str:
    """The Train tab's warning when this Space asked for a GPU that CUDA can't use ('' otherwise)."""
    warning = space_gpu_warning()
    return f"**No GPU:** {warning}" if warning else ""


def show_estimate(dataset: dict, *knobs) -> str:
    """The pre-flight estimate for the current settings (after the missing-GPU warning, if there is one);
    knobs: the preset, then the KNOBS values."""
    warning = gpu_warning()
    preset, *values = knobs
    try:
        recipe = build_recipe(preset, knob_settings(values), dataset)
        estimate = RUNS.estimate(recipe)
    except KNOB_ERRORS as error:
        return "\n\n".join(filter(None, [warning, f"Can't estimate yet: {for_visitor(error)}"]))
    return "\n\n".join(filter(None, [warning, estimate.summary() + over_caps_note(recipe, estimate)]))


def over_caps_note(recipe: RecipeConfig, estimate) -> str:
    """What Start would refuse about these settings on this app ('' when nothing)."""
    try:
        check_recipe_caps(recipe)
        check_scorecard_caps(recipe)
        check_estimate_caps(estimate)
    except CapError as error:
        return f"\n\n**Over this app's limits:** {for_visitor(error)}"
    return ""


def start_training(dataset: dict, owner: Owner | None, *knobs):
    """Queue a run for this visitor (theirs alone); it starts at once when nothing else trains. knobs: the
    preset, then the KNOBS values."""
    if owner is None:
        return None, "**Not started:** this browser is not identified yet -- reload the page"
    preset, *values = knobs
    try:
        recipe = build_recipe(preset, knob_settings(values), dataset)
        RUNS.check_room(owner)  # cheap, so before the estimate; submit checks it again, atomically
        RUNS.preflight(recipe)
        if has_gpu():
            # GPU memory is the scarce thing on a Space: drop the chat model; it reloads on the next question.
            CHAT.release()
        run_id = RUNS.submit(recipe, label=dataset.get("name") or "run", asker=owner)
    except KNOB_ERRORS as error:
        return None, f"**Not started:** {for_visitor(error)}"
    return run_id, f"Submitted run `{run_id}`."


def _act_on_run(action: str, run_id: str | None, owner: Owner | None, nothing: str, refused: str, done: str) -> str:
    """RUNS.<action>(run_id, owner), said as one line: `nothing` without a run, `refused` + why, or `done`."""
    if not run_id:
        return nothing
    try:
        getattr(RUNS, action)(run_id, owner)
    except ValueError as error:
        return f"**{refused}:** {for_visitor(error)}"
    return done.format(run_id=run_id)


def stop_training(run_id: str | None, owner: Owner | None) -> str:
    """Ask this visitor's run to stop after the current step (the adapter is saved)."""
    return _act_on_run("stop", run_id, owner, "No run of yours to stop.", "Not stopped",
                       "Stopping `{run_id}` after the current step; its adapter will be saved.")


def resume_training(run_id: str | None, owner: Owner | None) -> str:
    """Continue this visitor's failed or stopped run from its last checkpoint."""
    return _act_on_run("resume", run_id, owner, "No run of yours to resume.", "Not resumed",
                       "Resuming `{run_id}` from its last checkpoint.")


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def _progress_text(view) -> str:
    if view.state == QUEUED:
        when = ("in a moment" if view.wait_s is not None and view.wait_s < 30  # e.g. the example making way
                else f"in about {_minutes(view.wait_s)}")
        return f"**Queued**: position {view.queue_position} — starts {when}. Chat keeps working meanwhile."
    head = {RUNNING: "Training", COMPLETED: "Finished"}.get(view.state, view.state.capitalize())
    percent = 100 * view.step / view.total_steps if view.total_steps else 0
    text = (f"**{head}** `{view.run_id}` — step {view.step}/{view.total_steps or '?'} ({percent:.0f}%), "
            f"elapsed {_minutes(view.elapsed_s)}, ETA {_minutes(view.eta_s)}")
    if view.phase == SCORECARD_PHASE:
        text += (" — training done, the adapter is saved: compare it in Chat now; scoring base vs tuned on the "
                 "held-out questions…")
    if view.error:
        text += f"\n\n**Error:** {for_visitor(view.error)}"
    return text


def _busy_note(run_id: str | None, owner: Owner | None) -> str:
    """Who else trains now (another visitor's run id is theirs to know, not ours to show)."""
    busy, theirs = RUNS.training_now(owner)
    if not busy or (theirs and theirs == run_id):
        return ""
    if theirs and RUNS.is_example(theirs):
        return f"Training now on this app: the shared {EXAMPLE_NAME} -- it makes way as soon as you start a run."
    return f"Training now on this app: `{theirs}`." if theirs else "Training now on this app: another visitor's run."


def poll_run(run_id: str | None, owner: Owner | None):
    """Refresh progress, curves, log and buttons of this visitor's run (and say who else is training). Its outputs,
    in this order (the /poll_run API's): progress, loss plot, learning-rate plot, log, Compare, Resume, Stop, the
    preference plot (a DPO run's rewards) -- a new one goes at the end. Stop can be pressed only while the visitor's
    own run is queued or running."""
    hidden, no_stop = gr.update(visible=False), gr.update(interactive=False)
    if owner is None and run_id:  # the page's load event, which identifies the visitor, hasn't run yet
        return (gr.skip(),) * 8
    others = _busy_note(run_id, owner)
    if not run_id:
        return (others or "No training started in this browser yet.", None, None, "", hidden, hidden, no_stop, hidden)
    try:
        view = RUNS.view(run_id, owner)
    except ValueError as error:
        return (f"**Can't show that run:** {for_visitor(error)}", None, None, "", hidden, hidden, no_stop, hidden)
    text = _progress_text(view) + (f"\n\n{others}" if others else "")
    preference = curves_frame(view.metrics, PREFERENCE_CURVES)
    return (text, curves_frame(view.metrics, ("loss", "eval_loss")), curves_frame(view.metrics, ("learning_rate",)),
            hide_paths(view.log_tail), gr.update(visible=view.adapter_ready),
            gr.update(visible=view.resumable), gr.update(interactive=view.state in (QUEUED, RUNNING)),
            gr.update(value=preference, visible=not preference.empty))


def place(knobs: dict[str, Component], *keys: str) -> None:
    """Show these knobs here (in the row being built), in this order."""
    for key in keys:
        knobs[key].render()


def build_train_tab(dataset_state: gr.State, run_state, owner_state: gr.State, feedback_changed: gr.State) -> dict:
    """The Train tab; returns what the rest of the page hooks into: the preset picker, the knobs by recipe key,
    and the handler that fills the knobs from a preset (its outputs: the knobs' components)."""
    with gr.Tab("Train", id="train"):
        warning = gpu_warning()
        gr.Markdown(warning, visible=bool(warning), elem_id="gpu-warning")
        storage_note("train-storage-note")
        knobs = {key: make() for key, make in KNOBS.items()}
        with gr.Row():
            preset = gr.Dropdown(preset_names(), value=default_preset(), label="Recipe preset")
            place(knobs, "model.name", "model.load_in_4bit")
        with gr.Row():
            place(knobs, "training.epochs", "training.max_steps", "training.learning_rate", "training.batch_size",
                  "training.grad_accum")
        with gr.Row():
            place(knobs, "lora.r", "lora.alpha", "lora.dropout", "data.max_length", "training.scorecard_questions")
        with gr.Row():
            place(knobs, "training.probes", "training.report_to")
        unplaced = [key for key, knob in knobs.items() if not knob.is_rendered]
        if unplaced:
            raise RuntimeError(f"knobs {unplaced} are in KNOBS but nowhere on the tab -- place() them in a row")
        knob_inputs = [preset, *knobs.values()]  # as show_estimate and start_training take them
        fill_knobs = knobs_filler(knobs)
        estimate = gr.Markdown(elem_id="estimate")
        with gr.Row():
            estimate_button = gr.Button("Estimate")
            start = gr.Button("Start training", variant="primary", elem_id="start-training")
            # Pressable only while this visitor's run is queued or running: poll_run switches it.
            stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-training")
            resume = gr.Button("Resume", visible=False, elem_id="resume-training")
        progress = gr.Markdown("No training started in this browser yet.", elem_id="train-progress")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", elem_id="loss-plot")
            lr_plot = gr.LinePlot(x="step", y="value", color="series", title="Learning rate")
        # A DPO run's own curves: how much more the model prefers the chosen answers than its parent did.
        preference_plot = gr.LinePlot(x="step", y="value", color="series", visible=False, elem_id="preference-plot",
                                      title="Preference (DPO): rewards, margin, share of pairs won")
        log = gr.Textbox(label="Log (last lines)", lines=8, max_lines=8, autoscroll=True)
        compare = gr.Button("Compare in chat", visible=False, variant="primary", elem_id="compare-in-chat")
        build_retrain_panel(owner_state, run_state, progress, feedback_changed)
        scorecard = build_scorecard(run_state, owner_state)
        build_export_panel(run_state, owner_state)
        build_tracking_panel(run_state, owner_state)
        timer = gr.Timer(POLL_SECONDS)

        preset.change(fill_knobs, preset, list(knobs.values()))
        estimate_button.click(show_estimate, [dataset_state, *knob_inputs], estimate)
        start.click(start_training, [dataset_state, owner_state, *knob_inputs], [run_state, progress]).then(
            show_estimate, [dataset_state, *knob_inputs], estimate)
        stop.click(stop_training, [run_state, owner_state], progress)
        resume.click(resume_training, [run_state, owner_state], progress)
        timer.tick(poll_run, [run_state, owner_state], [progress, loss_plot, lr_plot, log, compare, resume, stop,
                                                      preference_plot])
        timer.tick(refresh_scorecard, [run_state, owner_state, scorecard["shown"], scorecard["verdict"]],
                   scorecard["outputs"])
    return {"preset": preset, "knobs": knobs, "fill_knobs": fill_knobs, "compare": compare,
            "scorecard_table": scorecard["table"]}
