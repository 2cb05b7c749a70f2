"""Launch training runs as their own processes, one at a time, with a queue behind them.

Each run is `python -m tuning train --config RUN/request.yaml --output RUN` (no shell), so an
out-of-memory crash can't take the app down, GPU memory is truly freed, and anything the app
started can be redone from the shell. Everything a viewer needs is on disk (status.json,
metrics.jsonl, train.log), so a reloaded page -- or a second visitor -- just reads it again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tuning.config import RecipeConfig, save_recipe
from tuning.run_files import (
    FAILED,
    FINISHED_STATES,
    QUEUED,
    RUNNING,
    STOPPED,
    read_log_tail,
    read_metrics,
    read_status,
    write_status,
)

REQUEST_FILE = "request.yaml"  # the recipe as asked for; the trainer writes the resolved config.yaml
CONSOLE_FILE = "console.log"  # the process's own stdout/stderr: what train.log can't hold (a hard crash)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class RunView:
    """Everything a page shows about one run."""

    run_id: str
    state: str
    step: int = 0
    total_steps: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    queue_position: int | None = None  # 1 = next to start
    wait_s: float | None = None  # estimated time until a queued run starts
    error: str | None = None
    phase: str | None = None  # "scorecard" while the finished model is being scored
    metrics: list[dict] = field(default_factory=list)
    log_tail: str = ""

    @property
    def finished(self) -> bool:
        """True once the run completed, stopped or failed."""
        return self.state in FINISHED_STATES


def make_run_id(label: str = "run") -> str:
    """A fresh, filesystem-safe run id; user text never becomes a path as-is."""
    safe = _SAFE_NAME.sub("-", label).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{uuid.uuid4().hex[:6]}"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class TrainingQueue:
    """One training process at a time; later requests wait in order and start by themselves."""

    def __init__(self, runs_dir: str | os.PathLike, estimate_seconds=None) -> None:
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._estimate_seconds = estimate_seconds or (lambda run_dir: None)
        self._lock = threading.RLock()
        self._waiting: deque[str] = deque()
        self._process: subprocess.Popen | None = None
        self._current: str | None = None

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run id (ids are made by make_run_id, never taken from user paths)."""
        if not run_id or _SAFE_NAME.search(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.runs_dir / run_id

    def submit(self, recipe: RecipeConfig, label: str = "run") -> str:
        """Queue a training run; it starts at once when nothing else is training."""
        run_id = make_run_id(label)
        run_dir = self.run_dir(run_id)
        save_recipe(recipe, run_dir / REQUEST_FILE, header="recipe as requested from the app")
        write_status(run_dir, QUEUED, submitted=time.time())
        with self._lock:
            self._waiting.append(run_id)
            self.poll()
        return run_id

    def _launch(self, run_id: str) -> None:
        run_dir = self.run_dir(run_id)
        command = [sys.executable, "-m", "tuning", "train", "--config", str(run_dir / REQUEST_FILE),
                   "--output", str(run_dir)]
        console = open(run_dir / CONSOLE_FILE, "ab")
        try:
            self._process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=Path.cwd())
        finally:
            console.close()  # the child holds its own copy
        self._current = run_id
        write_status(run_dir, RUNNING, pid=self._process.pid, launched=time.time())

    def poll(self) -> None:
        """Reap a finished process (marking a crash as failed) and start the next queued run."""
        with self._lock:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                run_dir = self.run_dir(self._current)
                if read_status(run_dir).get("state") not in FINISHED_STATES:
                    # The trainer records its own end; no record means it was killed or crashed hard.
                    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                    write_status(run_dir, FAILED, pid=None, error=f"training process ended: {reason}")
                self._process, self._current = None, None
            if self._process is None and self._waiting:
                self._launch(self._waiting.popleft())

    def stop(self, run_id: str) -> None:
        """Stop a run gracefully (SIGTERM: finish the step, save) or take it out of the queue."""
        with self._lock:
            if run_id in self._waiting:
                self._waiting.remove(run_id)
                write_status(self.run_dir(run_id), STOPPED, error="cancelled before it started")
            elif run_id == self._current and self._process is not None:
                self._process.send_signal(signal.SIGTERM)

    def active_run(self) -> str | None:
        """The run training now, if any."""
        with self._lock:
            self.poll()
            return self._current

    def view(self, run_id: str, log_lines: int = 30) -> RunView:
        """The run's state, progress, place in the queue, metrics and log tail."""
        self.poll()
        run_dir = self.run_dir(run_id)
        status = read_status(run_dir)
        state = status.get("state", FAILED if not run_dir.is_dir() else QUEUED)
        if state == RUNNING and run_id != self._current and not _alive(status.get("pid")):
            # Started by an earlier app process that is gone, and the trainer died with it.
            state = FAILED
            write_status(run_dir, FAILED, pid=None, error="training process is no longer running")
            status = read_status(run_dir)
        metrics = read_metrics(run_dir)
        last = metrics[-1] if metrics else {}
        step = status.get("step") if state in FINISHED_STATES and status.get("step") else last.get("step", 0)
        view = RunView(run_id=run_id, state=state, step=step,
                       total_steps=status.get("total_steps") or last.get("total_steps", 0),
                       elapsed_s=last.get("elapsed_s", 0.0), eta_s=last.get("eta_s"), error=status.get("error"),
                       phase=status.get("phase") if state == RUNNING else None,
                       metrics=metrics, log_tail=self._log_tail(run_dir, state, log_lines))
        if state == QUEUED:
            view.queue_position, view.wait_s = self._queue_place(run_id)
            if view.queue_position is None:  # queued by an app process that has since restarted
                write_status(run_dir, STOPPED, error="the app restarted before this run started -- start it again")
                view.state, view.error = STOPPED, read_status(run_dir)["error"]
        return view

    def _log_tail(self, run_dir: Path, state: str, lines: int) -> str:
        tail = read_log_tail(run_dir, lines)
        if state == FAILED:  # a hard crash leaves its last words in the console, not in train.log
            try:
                console = (run_dir / CONSOLE_FILE).read_text(encoding="utf-8", errors="replace")
            except OSError:
                console = ""
            extra = "\n".join(console.splitlines()[-lines:])
            if extra and extra not in tail:
                tail = f"{tail}\n--- console ---\n{extra}".strip()
        return tail

    def _queue_place(self, run_id: str) -> tuple[int | None, float | None]:
        with self._lock:
            if run_id not in self._waiting:
                return None, None
            position = self._waiting.index(run_id) + 1
            ahead = list(self._waiting)[: position - 1]
            current = self._current
        wait = 0.0
        if current:
            eta = self.view_eta(current)
            wait += eta if eta is not None else 0.0
        for other in ahead:
            estimate = self._estimate_seconds(self.run_dir(other))
            wait += estimate or 0.0
        return position, wait

    def view_eta(self, run_id: str) -> float | None:
        """Seconds left for a running run: its own ETA, else the pre-flight estimate."""
        metrics = read_metrics(self.run_dir(run_id))
        eta = next((m.get("eta_s") for m in reversed(metrics) if m.get("eta_s") is not None), None)
        return eta if eta is not None else self._estimate_seconds(self.run_dir(run_id))

    def list_runs(self) -> list[str]:
        """Run ids on disk, newest first."""
        runs = [p.name for p in self.runs_dir.iterdir() if p.is_dir() and not _SAFE_NAME.search(p.name)]
        return sorted(runs, reverse=True)
