"""Train tab: where a run's TensorBoard and trackio logs are (`training.report_to`), how to open them, and the zip."""

from __future__ import annotations

import gradio as gr

from tuning.runs.files import FINISHED_STATES
from tuning.runs.owner import Owner
from tuning.training.tracking import run_logs, zip_run_logs
from ui.messages import for_visitor, hide_paths
from ui.run_download import run_download_panel
from ui.state import RUNS

TRACKING_HELP = ("A run with **Also log to** ticked (a recipe's `training.report_to: [trackio, tensorboard]`) also "
                 "logs to TensorBoard and trackio, into its own folder (`logs/`); nothing is sent anywhere. The "
                 "curves above come from the run's metrics.jsonl either way.")


def show_tracking_logs(run_id: str | None, owner: Owner | None):
    """Where this visitor's run keeps its TensorBoard and trackio logs and the commands that open them; once the run
    has ended, the logs as a zip too."""
    if not run_id:
        return "Start a training run first: its logs are what this shows.", None
    try:
        run = RUNS.run(run_id, owner)
        logs = run_logs(run.path)
    except (ValueError, OSError) as error:
        return f"**Can't show its logs:** {for_visitor(error)}", None
    if not logs:
        return (f"`{run_id}` has no tracking logs (yet): its recipe's `training.report_to` is empty, or training "
                "hasn't started."), None
    commands = "\n".join(hide_paths(item.command) for item in logs)
    text = f"`{run_id}` keeps them in its run folder; open them from the app's folder with\n```sh\n{commands}\n```"
    if run.state() not in FINISHED_STATES:
        return text + "\n\nThey can be downloaded once the run has ended.", None
    try:
        archive = zip_run_logs(run.path)
    except OSError as error:
        return f"{text}\n\n**Not zipped:** {for_visitor(error)}", None
    return text, str(archive)


def build_tracking_panel(run_state, owner_state: gr.State) -> None:
    """The run's TensorBoard and trackio logs: where they are, how to open them, and the zip."""
    run_download_panel("Tracking logs (TensorBoard, trackio)", TRACKING_HELP, "Show this run's logs", "Logs (zip)",
                       "tracking-logs", show_tracking_logs, [run_state, owner_state])
