"""Experiment tracking (`training.report_to`): transformers' own TensorBoard and trackio callbacks, pointed at the
run folder's logs/ and nowhere else.

metrics.jsonl stays what the app reads; these are for people who already live in TensorBoard or trackio. Both
trackers are local here: TensorBoard's event files go to RUN/logs/tensorboard (TENSORBOARD_LOGGING_DIR, which
transformers' TensorBoardCallback reads), trackio's SQLite store to RUN/logs/trackio (TRACKIO_DIR, which trackio
reads once, when it is first imported -- by the callback, in the training process). No Space, bucket, server or
webhook: the variables that would send trackio's logs anywhere are taken out of the training process's environment,
and the static Space transformers offers to make after training is turned off.

Nothing here imports either tracker, so the app starts as fast as before.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tuning.config import REPORT_TO_NAMES, RecipeConfig
from tuning.errors import UsageError

LOGS_DIR = "logs"  # in the run folder: one folder per tracker
TRACKIO, TENSORBOARD = REPORT_TO_NAMES
TRACKIO_PROJECT = "kantele"  # every run folder holds its own trackio store, so one project name serves them all
# The environment trackio and transformers read (trackio/utils.py, integration_utils.TensorBoardCallback).
TRACKIO_DIR_ENV, TENSORBOARD_DIR_ENV = "TRACKIO_DIR", "TENSORBOARD_LOGGING_DIR"
# What would send trackio's logs off the machine (a Space, a self-hosted server, a bucket, a dataset, a webhook).
TRACKIO_REMOTE_ENV = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID",
                      "TRACKIO_REGISTRY_BUCKET_ID", "TRACKIO_WEBHOOK_URL", "TRACKIO_WRITE_TOKEN")
# The package each tracker needs in the training process (TensorBoard's writer is torch's, on top of tensorboard).
PACKAGES = {TRACKIO: "trackio", TENSORBOARD: "tensorboard"}


def logs_dir(run_dir: str | os.PathLike, tracker: str) -> Path:
    """Where a tracker's logs go in the run folder: RUN/logs/<tracker>."""
    return Path(run_dir) / LOGS_DIR / tracker


def trackers(recipe: RecipeConfig) -> list[str]:
    """The recipe's trackers, each once, in its order."""
    return list(dict.fromkeys(recipe.training.report_to))


def report_arguments(recipe: RecipeConfig, run_dir: Path, environ=os.environ) -> dict:
    """The TrainingArguments (and TRL config) keywords that turn the recipe's trackers on, with this process's
    environment pointed at the run folder for them; `report_to="none"` when the recipe names none.

    Called where the Trainer's arguments are made, before the Trainer imports a tracker."""
    names = trackers(recipe)
    if not names:
        return {"report_to": "none"}
    missing = [PACKAGES[name] for name in names if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise UsageError(f"training.report_to needs {', '.join(missing)}, which isn't installed -- "
                         "`pip install -r requirements.txt`, or set training.report_to: []")
    run_dir = Path(run_dir).resolve()
    if TENSORBOARD in names:
        environ[TENSORBOARD_DIR_ENV] = str(logs_dir(run_dir, TENSORBOARD))
    if TRACKIO in names:
        folder = logs_dir(run_dir, TRACKIO)
        imported = sys.modules.get("trackio.utils")
        if imported is not None and Path(imported.TRACKIO_DIR) != folder:
            # trackio fixed its folder when it was imported: logging now would write outside this run's folder.
            raise RuntimeError(f"trackio was imported before training pointed it at {folder} -- train in a new "
                               "process (python -m tuning train)")
        environ[TRACKIO_DIR_ENV] = str(folder)
        for name in TRACKIO_REMOTE_ENV:
            environ.pop(name, None)
    return {
        "report_to": names,
        "run_name": run_dir.name,
        "project": TRACKIO_PROJECT,
        "trackio_space_id": None,  # local only: no Gradio Space to log to
        "trackio_static_space_id": False,  # and no static Space made after training
    }


@dataclass(frozen=True)
class TrackerLogs:
    """One tracker's logs in a run folder, and the command that opens them."""

    tracker: str
    folder: Path

    @property
    def command(self) -> str:
        folder = shlex.quote(str(self.folder))
        if self.tracker == TENSORBOARD:
            return f"tensorboard --logdir {folder}"
        return f"{TRACKIO_DIR_ENV}={folder} trackio show --project {TRACKIO_PROJECT}"


def run_logs(run_dir: str | os.PathLike) -> list[TrackerLogs]:
    """The trackers that have written logs into this run folder, in REPORT_TO_NAMES order (none: [])."""
    folders = [logs_dir(run_dir, tracker) for tracker in REPORT_TO_NAMES]
    return [TrackerLogs(folder.name, folder) for folder in folders if folder.is_dir() and any(folder.iterdir())]


def zip_run_logs(run_dir: str | os.PathLike, destination: str | os.PathLike | None = None) -> Path:
    """The run folder's logs/ as one zip (logs/<tracker>/... inside), written whole or not at all; by default into
    the temp folder, named after the run. FileNotFoundError when the run has no logs."""
    from tuning.atomic import staged_file

    run_dir = Path(run_dir)
    source = run_dir / LOGS_DIR
    files = sorted(path for path in source.rglob("*") if path.is_file()) if source.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{run_dir.name} has no tracking logs")
    target = Path(destination or Path(tempfile.gettempdir()) / "kantele-logs" / f"{run_dir.name}-logs.zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(target) as temp, zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(run_dir).as_posix())
    return target
