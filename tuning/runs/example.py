"""The Kalevala example run: trained by the app itself when it starts, so the first visitor finds it ready.

One shared, read-only run per base model (ownerless, marked by example.json): every visitor sees it in Chat,
the scorecard and Publish, and anyone may publish it to their own account; no visitor can stop or resume it.
It trains as a background run, so a visitor's run goes first (tuning/runs/queue.py). A Space deployed with
`deploy --with-run RUN` carries a finished one in bundled_runs/, copied into the runs folder at start.

KANTELE_EXAMPLE=auto|off (default auto; spaces.yaml's example_run sets it on a Space) switches it;
KANTELE_EXAMPLE_RECIPE names another recipe for it (the browser test's short run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, ConfigError, RecipeConfig, load_recipe
from tuning.runs.files import (
    BUNDLED_RUNS_DIR,
    COMPLETED,
    EXAMPLE_FILE,
    FAILED,
    QUEUED,
    RUNNING,
    SCORECARD_PHASE,
    STOPPED,
    read_json,
    write_json,
)
from tuning.runs.queue import RunView, TrainingQueue
from tuning.runs.run import Run

EXAMPLE_ENV = "KANTELE_EXAMPLE"
EXAMPLE_RECIPE_ENV = "KANTELE_EXAMPLE_RECIPE"
MODES = ("auto", "off")
EXAMPLE_NAME = "Kalevala example"
EXAMPLE_LABEL = "kalevala-example"
APP_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = APP_ROOT / "configs"


def example_mode(environ=os.environ) -> str:
    """auto or off, from KANTELE_EXAMPLE; anything else is a ConfigError naming the variable and the values."""
    mode = (environ.get(EXAMPLE_ENV) or "auto").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"{EXAMPLE_ENV}={environ.get(EXAMPLE_ENV)!r}: use one of {', '.join(MODES)}")
    return mode


def example_base_model() -> str:
    """The base model the app uses by default ('auto' resolved): the example is trained on this one."""
    from tuning.models.loading import default_model_name

    return default_model_name()


def example_recipe(environ=os.environ) -> RecipeConfig:
    """The example's recipe: KANTELE_EXAMPLE_RECIPE, else the Kalevala preset for the base model in use (the CPU
    recipe for the embedded model, the GPU one for any other), its data paths made absolute for the trainer."""
    base = example_base_model()
    own = environ.get(EXAMPLE_RECIPE_ENV)
    recipe = load_recipe(own or CONFIGS_DIR / ("kalevala.yaml" if base == EMBEDDED_MODEL else "kalevala-tinyllama.yaml"))
    if not own or recipe.model.name == AUTO_MODEL:  # the preset, on whichever model the app uses by default
        recipe.model.name = base
    for split in ("train", "validation", "sources"):
        setattr(recipe.data, split, [f if Path(f).is_absolute() else str(APP_ROOT / f)
                                     for f in getattr(recipe.data, split)])
    return recipe


def is_example(run_dir: str | os.PathLike) -> bool:
    """True for the shared example run (example.json in its folder)."""
    return (Path(run_dir) / EXAMPLE_FILE).is_file()


def mark_example(run_dir: str | os.PathLike, base_model: str) -> None:
    """Record a run folder as the shared example for base_model."""
    write_json(Path(run_dir) / EXAMPLE_FILE, {"example": "kalevala", "base_model": base_model})


def example_runs(runs_dir: str | os.PathLike, base_model: str) -> list[Run]:
    """The example runs for base_model, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = [Run(path) for path in sorted(runs_dir.iterdir(), reverse=True) if is_example(path)]
    return [run for run in found if (read_json(run.path / EXAMPLE_FILE, {}) or {}).get("base_model") == base_model]


def install_bundled_runs(runs_dir: str | os.PathLike, app_root: Path = APP_ROOT) -> list[str]:
    """Copy the runs a deploy bundled (bundled_runs/RUN) into the runs folder, once, as example runs."""
    bundled = app_root / BUNDLED_RUNS_DIR
    installed = []
    if not bundled.is_dir():
        return installed
    for source in sorted(bundled.iterdir()):
        target = Path(runs_dir) / source.name
        if not source.is_dir() or target.exists():
            continue
        shutil.copytree(source, target)
        if not is_example(target):
            mark_example(target, Run(target).base_model().name)
        installed.append(source.name)
    return installed


def ensure_example(queue: TrainingQueue, environ=os.environ, force: bool = False) -> str | None:
    """The example run for the base model in use, queued when none is finished, training or queued.

    None when KANTELE_EXAMPLE is off (unless force: a visitor asked for it). A failed or stopped example with
    a checkpoint resumes from it; one without starts afresh."""
    if example_mode(environ) == "off" and not force:
        return None
    install_bundled_runs(queue.runs_dir)
    recipe = example_recipe(environ)
    base = recipe.model.name
    for run in example_runs(queue.runs_dir, base):
        view = queue.view(run.id)
        if view.state in (COMPLETED, QUEUED, RUNNING):
            return run.id
        if view.state in (FAILED, STOPPED) and view.resumable:
            queue.resume(run.id)
            return run.id
    run_id = queue.submit(recipe, label=EXAMPLE_LABEL, background=True)
    mark_example(queue.run_dir(run_id), base)
    return run_id


def example_progress(view: RunView | None) -> str:
    """One line on where the example stands, as Chat shows it."""
    if view is None:
        return ""
    name = f"**{EXAMPLE_NAME}**"
    of = f"step {view.step} of {view.total_steps}" if view.total_steps else ""
    if view.has_adapter and (view.state == COMPLETED or view.phase == SCORECARD_PHASE):
        return f"{name}: ready -- ask a question below, the right pane answers with it."
    if view.paused:
        return (f"{name}: paused at {of or 'its start'} while a visitor's run trains first; it resumes by itself "
                "afterwards.")
    if view.state == QUEUED:
        ahead = f" ({view.queue_position - 1} ahead of it)" if view.queue_position and view.queue_position > 1 else ""
        return f"{name}: waiting for the trainer{ahead}."
    if view.state == RUNNING:
        if not of:
            return f"{name}: starting (loading the model and the data)..."
        return f"{name}: {of}, ready in {_about(view.eta_s)}."
    return f"{name}: {view.state}{f' -- {view.error}' if view.error else ''}."


def _about(seconds: float | None) -> str:
    if seconds is None:
        return "a few minutes"
    minutes = round(seconds / 60)
    if minutes <= 1:
        return "about a minute" if seconds > 30 else "under a minute"
    return f"about {minutes} minutes"
