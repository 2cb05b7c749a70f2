"""Train: pick a model and a recipe, see the cost up front, start, watch, stop."""

from __future__ import annotations

import gradio as gr

from tuning.config import ConfigError, RecipeConfig, load_recipe
from tuning.hardware.device import space_gpu_warning
from tuning.training.estimate import estimate_recipe
from tuning.models.names import check_model_name
from tuning.models.loading import GPU_DEFAULT_MODEL, ModelLoadError, has_gpu
from tuning.runs.caps import check_estimate_caps, check_recipe_caps, check_scorecard_caps, preflight
from tuning.runs.files import COMPLETED, QUEUED, RUNNING, SCORECARD_PHASE
from tuning.runs.owner import Owner
from tuning.guards.caps import CapError, is_shared
from ui.cluster_export import build_export_panel
from ui.plots import curves_frame
from ui.scorecard import build_scorecard, refresh_scorecard
from ui.messages import for_visitor, hide_paths
from ui.state import CHAT, CONFIGS_DIR, QUEUE, RUNS_DIR

MODEL_CHOICES = ["auto", "embedded", GPU_DEFAULT_MODEL]
MODEL_LABEL = "Base model (Hub id, local folder, 'embedded'; auto = by hardware)"
SHARED_MODEL_LABEL = "Base model (Hub id or 'embedded'; auto = by hardware)"  # no local folders on a shared app
POLL_SECONDS = 2.0
SHORT_RUN_STEPS = 50
# What a knob a visitor typed can raise (int(inf) is an OverflowError): each is shown, none is a crash.
KNOB_ERRORS = (ConfigError, ModelLoadError, ValueError, OverflowError)


def preset_names() -> list[str]:
    """Recipe files shipped in configs/."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def default_preset() -> str:
    """The GPU recipe where there is a GPU, the CPU one elsewhere."""
    return "kalevala-tinyllama" if has_gpu() else "kalevala"


def preset_values(name: str) -> list:
    """Knob values of a preset, in KNOBS order."""
    recipe = load_recipe(CONFIGS_DIR / f"{name}.yaml")
    t, lora = recipe.training, recipe.lora
    return [recipe.model.name, t.epochs, t.max_steps, t.learning_rate, lora.r, lora.alpha, lora.dropout,
            t.batch_size, t.grad_accum, recipe.data.max_length, recipe.model.load_in_4bit, t.scorecard_questions]


def build_recipe(preset, model, epochs, max_steps, lr, r, alpha, dropout, batch, accum, max_length, four_bit,
                 scorecard_questions, dataset: dict) -> RecipeConfig:
    """The preset with the knobs applied and the session's dataset as its data."""
    if not dataset.get("train_file"):
        raise ConfigError("load a dataset first (Data tab: 'Load the Kalevala example' or your files)")
    model = check_model_name(model)  # before anything reads the disk: a shared app names no local folder
    recipe = load_recipe(CONFIGS_DIR / f"{preset}.yaml")
    recipe.model.name, recipe.model.load_in_4bit = model, bool(four_bit)
    recipe.training.epochs, recipe.training.max_steps = float(epochs), int(max_steps or -1)
    recipe.training.learning_rate, recipe.training.batch_size = float(lr), int(batch)
    recipe.training.grad_accum = int(accum)
    recipe.training.scorecard_questions = max(0, int(scorecard_questions or 0))
    recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout = int(r), int(alpha), float(dropout)
    recipe.data.max_length = int(max_length)
    recipe.data.train, recipe.data.validation = [dataset["train_file"]], [dataset["validation_file"]]
    if 0 < recipe.training.max_steps < SHORT_RUN_STEPS:
        recipe.training.logging_steps = 1  # a short run still draws a curve
    return recipe


def gpu_warning() -> str:
    """The Train tab's warning when this Space asked for a GPU that CUDA can't use ('' otherwise)."""
    warning = space_gpu_warning()
    return f"**No GPU:** {warning}" if warning else ""


def show_estimate(dataset: dict, *knobs) -> str:
    """The pre-flight estimate for the current settings (after the missing-GPU warning, if there is one)."""
    warning = gpu_warning()
    try:
        recipe = build_recipe(*knobs, dataset)
        estimate = estimate_recipe(recipe, RUNS_DIR)
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
    """Queue a run for this visitor (theirs alone); it starts at once when nothing else trains."""
    if owner is None:
        return None, "**Not started:** this browser is not identified yet -- reload the page"
    try:
        recipe = build_recipe(*knobs, dataset)
        QUEUE.check_room(owner)  # cheap, so before the estimate; submit checks it again, atomically
        preflight(recipe, RUNS_DIR)
        if has_gpu():
            # GPU memory is the scarce thing on a Space: drop the chat model; it reloads on the next question.
            CHAT.release()
        run_id = QUEUE.submit(recipe, label=dataset.get("name") or "run", owner=owner)
    except KNOB_ERRORS as error:
        return None, f"**Not started:** {for_visitor(error)}"
    return run_id, f"Submitted run `{run_id}`."


def stop_training(run_id: str | None, owner: Owner | None) -> str:
    """Ask this visitor's run to stop after the current step (the adapter is saved)."""
    if not run_id:
        return "No run of yours to stop."
    try:
        QUEUE.owned_run_dir(run_id, owner)
    except ValueError as error:
        return f"**Not stopped:** {for_visitor(error)}"
    QUEUE.stop(run_id)
    return f"Stopping `{run_id}` after the current step; its adapter will be saved."


def resume_training(run_id: str | None, owner: Owner | None) -> str:
    """Continue this visitor's failed or stopped run from its last checkpoint."""
    if not run_id:
        return "No run of yours to resume."
    try:
        QUEUE.owned_run_dir(run_id, owner)
        QUEUE.resume(run_id, owner)
    except ValueError as error:
        return f"**Not resumed:** {for_visitor(error)}"
    return f"Resuming `{run_id}` from its last checkpoint."


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def _progress_text(view) -> str:
    if view.state == QUEUED:
        return (f"**Queued**: position {view.queue_position} — starts in about {_minutes(view.wait_s)}. "
                "Chat keeps working meanwhile.")
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


def _busy_note(active: str | None, run_id: str | None, owner: Owner | None) -> str:
    """Who else trains now (another visitor's run id is theirs to know, not ours to show)."""
    if not active or active == run_id:
        return ""
    try:
        QUEUE.owned_run_dir(active, owner)
    except ValueError:
        return "Training now on this app: another visitor's run."
    return f"Training now on this app: `{active}`."


def poll_run(run_id: str | None, owner: Owner | None):
    """Refresh progress, curves, log and buttons of this visitor's run (and say who else is training)."""
    hidden = gr.update(visible=False)
    if owner is None and run_id:  # the page's load event, which identifies the visitor, hasn't run yet
        return (gr.skip(),) * 6
    others = _busy_note(QUEUE.active_run(), run_id, owner)
    if not run_id:
        return (others or "No training started in this browser yet.", None, None, "", hidden, hidden)
    try:
        QUEUE.owned_run_dir(run_id, owner)
        view = QUEUE.view(run_id)
    except ValueError as error:
        return (f"**Can't show that run:** {for_visitor(error)}", None, None, "", hidden, hidden)
    text = _progress_text(view) + (f"\n\n{others}" if others else "")
    return (text, curves_frame(view.metrics, ("loss", "eval_loss")), curves_frame(view.metrics, ("learning_rate",)),
            hide_paths(view.log_tail), gr.update(visible=view.adapter_ready),
            gr.update(visible=view.resumable))


def build_train_tab(dataset_state: gr.State, run_state, owner_state: gr.State) -> dict:
    """The Train tab; returns the components other tabs hook into."""
    with gr.Tab("Train", id="train"):
        warning = gpu_warning()
        gr.Markdown(warning, visible=bool(warning), elem_id="gpu-warning")
        with gr.Row():
            preset = gr.Dropdown(preset_names(), value=default_preset(), label="Recipe preset")
            model = gr.Dropdown(MODEL_CHOICES, value="auto", allow_custom_value=True,
                                label=SHARED_MODEL_LABEL if is_shared() else MODEL_LABEL)
            four_bit = gr.Checkbox(value=True, label="4-bit base weights (QLoRA)")
        with gr.Row():
            epochs = gr.Number(label="Epochs", minimum=0.1)
            max_steps = gr.Number(label="Max steps (-1: use epochs)", precision=0, elem_id="max-steps")
            lr = gr.Number(label="Learning rate")
            batch = gr.Number(label="Batch size", precision=0, minimum=1)
            accum = gr.Number(label="Grad accumulation", precision=0, minimum=1)
        with gr.Row():
            r = gr.Number(label="LoRA r", precision=0, minimum=1)
            alpha = gr.Number(label="LoRA alpha", precision=0, minimum=1)
            dropout = gr.Number(label="LoRA dropout", minimum=0, maximum=0.9)
            max_length = gr.Number(label="Max length (tokens)", precision=0, minimum=16)
            # The scorecard answers every question twice after training: a sample makes a quick run's quick.
            scorecard_questions = gr.Number(label="Scorecard questions (0: all held-out)", precision=0, minimum=0,
                                            elem_id="scorecard-questions")
        knobs = [preset, model, epochs, max_steps, lr, r, alpha, dropout, batch, accum, max_length, four_bit,
                 scorecard_questions]
        estimate = gr.Markdown(elem_id="estimate")
        with gr.Row():
            estimate_button = gr.Button("Estimate")
            start = gr.Button("Start training", variant="primary", elem_id="start-training")
            stop = gr.Button("Stop", variant="stop", elem_id="stop-training")
            resume = gr.Button("Resume", visible=False, elem_id="resume-training")
        progress = gr.Markdown("No training started in this browser yet.", elem_id="train-progress")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", elem_id="loss-plot")
            lr_plot = gr.LinePlot(x="step", y="value", color="series", title="Learning rate")
        log = gr.Textbox(label="Log (last lines)", lines=8, max_lines=8, autoscroll=True)
        compare = gr.Button("Compare in chat", visible=False, variant="primary", elem_id="compare-in-chat")
        scorecard = build_scorecard(run_state, owner_state)
        build_export_panel(run_state, owner_state)
        timer = gr.Timer(POLL_SECONDS)

        preset.change(preset_values, preset, knobs[1:])
        estimate_button.click(show_estimate, [dataset_state, *knobs], estimate)
        start.click(start_training, [dataset_state, owner_state, *knobs], [run_state, progress]).then(
            show_estimate, [dataset_state, *knobs], estimate)
        stop.click(stop_training, [run_state, owner_state], progress)
        resume.click(resume_training, [run_state, owner_state], progress)
        timer.tick(poll_run, [run_state, owner_state], [progress, loss_plot, lr_plot, log, compare, resume])
        timer.tick(refresh_scorecard, [run_state, owner_state, scorecard["shown"], scorecard["verdict"]],
                   scorecard["outputs"])
    return {"preset": preset, "knobs": knobs, "compare": compare, "scorecard_table": scorecard["table"]}
