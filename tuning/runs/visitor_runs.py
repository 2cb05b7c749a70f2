"""The runs as a visitor may see them: the one door from the UI to run folders and the training queue.

Every method takes the asker (`Owner`; None only for the shell and an app on your own machine, where every
run is open) and checks, here on the server, that a run id a browser sent is theirs before any folder is
opened or any run is stopped, resumed or shown: RunAccessError otherwise, worded the same whether the run is
someone else's or doesn't exist (ids are not probed). The UI holds this object, never the queue itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tuning.config import RecipeConfig
from tuning.errors import UsageError
from tuning.runs.example import EXAMPLE_NAME, ensure_example, is_example
from tuning.runs.files import COMPLETED, SCORECARD_PHASE
from tuning.runs.owner import Owner, may_open
from tuning.runs.queue import RunView, TrainingQueue
from tuning.runs.run import Run

READ_ONLY_EXAMPLE = (f"the {EXAMPLE_NAME} is shared by every visitor, so no one can stop or resume it -- it "
                     "makes way for your own run by itself; start one in Train")


def example_ready(view: RunView) -> bool:
    """True once the example's adapter is final: completed, or scoring itself after training."""
    return view.has_adapter and (view.state == COMPLETED or view.phase == SCORECARD_PHASE)


class VisitorRuns:
    """The training queue and the runs folder, each use checked against who asks."""

    # Machine-wide questions that open no one's run (the estimate reads only earlier runs' speeds): the only
    # methods without an asker (tests/guards/test_isolation.py holds every other one to it).
    # The shared example is everyone's to watch (start_example and example_view), like the estimate.
    MACHINE_WIDE = ("estimate", "preflight", "start_example", "example_view", "is_example", "start_supervisor")

    def __init__(self, queue: TrainingQueue) -> None:
        self._queue = queue
        self._example_id: str | None = None
        self._example_lock = threading.Lock()  # two visitors' clicks on "Train the example" queue one example

    def runs(self, asker: Owner | None) -> list[Run]:
        """The asker's runs and the ownerless ones, newest first."""
        return [Run(self._queue.run_dir(run_id)) for run_id in self._queue.owned_runs(asker)]

    def finished(self, asker: Owner | None) -> list[str]:
        """Ids of the asker's runs with a saved adapter (to chat with, score, publish), newest first; the
        shared example only once it is done (a paused one has a half-trained adapter)."""
        return [run.id for run in self.runs(asker) if run.has_adapter()
                and (not is_example(run.path) or example_ready(self._queue.view(run.id, log_lines=0)))]

    def preselected(self, asker: Owner | None) -> str | None:
        """The run Chat opens on: the asker's newest finished run, else the finished example, else none."""
        finished = self.finished(asker)
        own = [run_id for run_id in finished if Run(self._queue.run_dir(run_id)).owner_digest() is not None]
        return (own or finished or [None])[0]

    def start_supervisor(self) -> None:
        """Start the queue's supervisor: queued runs start with no page open."""
        self._queue.start_supervisor()

    def start_example(self, environ=os.environ, force: bool = False) -> str | None:
        """Queue the shared example when it isn't there yet (KANTELE_EXAMPLE=auto, or force); its run id."""
        with self._example_lock:
            self._example_id = ensure_example(self._queue, environ, force=force) or self._example_id
            return self._example_id

    def is_example(self, run_id: str) -> bool:
        """True for the shared example run (everyone's to see: the id alone opens nothing)."""
        return is_example(self._queue.run_dir(run_id))

    def example_view(self) -> RunView | None:
        """The shared example's progress (None when there is none)."""
        if self._example_id is None or not self._queue.run_dir(self._example_id).is_dir():
            return None
        return self._queue.view(self._example_id, log_lines=0)

    def run(self, run_id: str, asker: Owner | None) -> Run:
        """The run a browser named, once it is checked to be the asker's (RunAccessError otherwise)."""
        return Run(self._queue.owned_run_dir(run_id, asker))

    def submit(self, recipe: RecipeConfig, label: str, asker: Owner | None) -> str:
        """Queue a run owned by the asker; its id. CapError when they are at their cap of runs."""
        return self._queue.submit(recipe, label=label, owner=asker)

    def estimate(self, recipe: RecipeConfig):
        """A recipe's pre-flight estimate on this machine, timed by the speed earlier runs recorded here (their
        tokens/s only: no run's data, answers or files reach the asker)."""
        from tuning.training.estimate import estimate_recipe

        return estimate_recipe(recipe, self._queue.runs_dir)

    def preflight(self, recipe: RecipeConfig):
        """The asker's recipe checked against the caps in force (CapError), with its estimate when one was needed."""
        from tuning.runs.caps import preflight

        return preflight(recipe, self._queue.runs_dir)

    def check_room(self, asker: Owner | None) -> None:
        """CapError when the asker already has as many runs queued or training as a visitor may."""
        self._queue.check_room(asker)

    def _changeable(self, run_id: str, asker: Owner | None) -> None:
        """RunAccessError unless the run is the asker's; UsageError for the shared example (only the shell may)."""
        run = self.run(run_id, asker)
        if asker is not None and is_example(run.path):
            raise UsageError(READ_ONLY_EXAMPLE)

    def stop(self, run_id: str, asker: Owner | None) -> None:
        """Stop the asker's run (graceful), or take it out of the queue."""
        self._changeable(run_id, asker)
        self._queue.stop(run_id)

    def resume(self, run_id: str, asker: Owner | None) -> None:
        """Queue the asker's failed or stopped run again, from its last checkpoint."""
        self._changeable(run_id, asker)
        self._queue.resume(run_id, asker)

    def view(self, run_id: str, asker: Owner | None, log_lines: int = 30) -> RunView:
        """The asker's run: state, progress, place in the queue, metrics and log tail."""
        self.run(run_id, asker)
        return self._queue.view(run_id, log_lines)

    def training_now(self, asker: Owner | None) -> tuple[bool, str | None]:
        """(whether a run trains now, its id when it is the asker's): another visitor's run id is theirs to
        know, so only that the slot is busy is said."""
        active = self._queue.active_run()
        if active is None:
            return False, None
        return True, (active if may_open(self._queue.run_dir(active), asker) else None)

    def import_adapter(self, upload: str | Path, asker: Owner | None):
        """An adapter the asker uploaded (a .zip or folder), added as a finished run they own."""
        from tuning.portable.adapter_import import import_adapter

        return import_adapter(upload, self._queue.runs_dir, asker)
