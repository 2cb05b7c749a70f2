"""Launch training runs as their own processes, one at a time, with a queue behind them.

Each run is `python -m tuning train --config RUN/request.yaml --output RUN` (no shell), so an
out-of-memory crash can't take the app down, GPU memory is truly freed, and anything the app
started can be redone from the shell. Everything a viewer needs is on disk (status.json,
metrics.jsonl, train.log), so a reloaded page -- or a second visitor -- just reads it again.

The queue itself is on disk too (runs/queue.json): an app that restarts starts its queued runs again, in
their order. A supervisor thread polls it, so the next run starts with no page open. A background run (the
shared Kalevala example) yields to visitors: a visitor's run goes ahead of it, stopping it at its next step
with a checkpoint, and it resumes from there once the visitors' runs are done.
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

from tuning.atomic import LOW_SPACE_BYTES, disk_full_error, free_bytes
from tuning.config import RecipeConfig, save_recipe
from tuning.errors import UsageError
from tuning.guards.caps import CapError, caps
from tuning.runs.caps import check_recipe_caps
from tuning.runs.files import (
    COMPLETED,
    CONSOLE_FILE,
    FAILED,
    FINISHED_STATES,
    METRICS_FILE,
    QUEUED,
    REQUEST_FILE,
    RUNNING,
    SCORECARD_PHASE,
    STOPPED,
    checkpoint_step,
    has_adapter,
    latest_checkpoint,
    read_json,
    read_log_tail,
    read_metrics,
    read_status,
    write_json,
    write_status,
)
from tuning.runs.owner import Owner, check_owner, may_open, read_owner, record_owner

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")
QUEUE_FILE = "queue.json"  # in the runs folder: the waiting runs in order, so a restart doesn't lose them
SUPERVISOR_SECONDS = 2.0
YIELDED_NOTE = "paused for a visitor's run: it resumes from its checkpoint afterwards"


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
    phase: str | None = None  # SCORECARD_PHASE while the finished model is being scored
    metrics: list[dict] = field(default_factory=list)
    log_tail: str = ""
    resumable: bool = False  # failed or stopped short with a checkpoint: `resume` continues from it
    has_adapter: bool = False  # the final adapter is saved (a killed run may have none)
    background: bool = False  # yields to visitors' runs (the shared example)
    paused: bool = False  # a background run stopped for a visitor's run, queued to resume

    @property
    def finished(self) -> bool:
        """True once the run completed, stopped or failed."""
        return self.state in FINISHED_STATES

    @property
    def adapter_ready(self) -> bool:
        """True once there is an adapter to chat with: chat needn't wait for the scorecard that follows it."""
        return self.has_adapter and (self.finished or self.phase == SCORECARD_PHASE)


def make_run_id(label: str = "run") -> str:
    """A fresh, filesystem-safe run id; user text never becomes a path as-is."""
    safe = _SAFE_NAME.sub("-", label).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{uuid.uuid4().hex[:6]}"


def crash_reason(code: int, run_dir: Path) -> str:
    """Why a trainer ended without recording its end, and how to go on from there."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        # The kernel's out-of-memory killer sends SIGKILL; so does `kill -9`.
        why = f"killed by signal {-code} ({name}{', often out of memory' if -code == signal.SIGKILL else ''})"
    else:
        free = free_bytes(run_dir)
        if free is not None and free < LOW_SPACE_BYTES:  # too full even for the trainer to record its failure
            return str(disk_full_error(run_dir))
        why = f"exit code {code}"
    checkpoint = latest_checkpoint(run_dir)
    then = (f"resume continues from step {checkpoint_step(checkpoint)} (its last checkpoint)" if checkpoint
            else "no checkpoint was saved yet, so start it again")
    return f"training process ended: {why} -- {then}"


def child_environment(environ=os.environ) -> dict:
    """The trainer's environment: the app's, pinned to one GPU (CUDA_VISIBLE_DEVICES=0) where it sees several.

    A plain `tuning train` that sees several GPUs sizes its batch per GPU (tuning/training/distributed.py gpus_per_process),
    so the recipe's batch would change silently with the machine. Whoever set CUDA_VISIBLE_DEVICES, or launched
    the app under a launcher that places processes (WORLD_SIZE, LOCAL_RANK), decides instead."""
    env = dict(environ)
    if "CUDA_VISIBLE_DEVICES" in env or "WORLD_SIZE" in env or "LOCAL_RANK" in env:
        return env
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        env["CUDA_VISIBLE_DEVICES"] = "0"  # `accelerate launch -m tuning train ...` trains on all of them
    return env


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _record_failure(run_dir: Path, error: str) -> dict:
    """Mark a run failed for a trainer that could not say so itself, in status.json and its console log."""
    status = {**read_status(run_dir), "state": FAILED, "pid": None, "error": error}
    try:
        status = write_status(run_dir, FAILED, pid=None, error=error)
        with open(run_dir / CONSOLE_FILE, "a", encoding="utf-8") as console:
            console.write(f"[kantele] {error}\n")  # so the log tail the page shows says it too
    except OSError:  # a full disk must not wedge the queue; the page still gets the failure from here
        pass
    return status


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
        self._resuming: set[str] = set()  # queued runs to relaunch with --resume
        self._yielding: str | None = None  # the background run asked to stop for a visitor's run
        self._supervisor: threading.Thread | None = None
        self._supervising = threading.Event()
        self._restore_waiting()

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run id (ids are made by make_run_id, never taken from user paths)."""
        if not run_id or _SAFE_NAME.search(run_id):
            raise UsageError(f"not a run id: {run_id!r}")
        return self.runs_dir / run_id

    def submit(self, recipe: RecipeConfig, label: str = "run", owner: Owner | None = None,
               background: bool = False) -> str:
        """Queue a training run (private to `owner` when given); it starts at once when nothing else trains.
        A background run waits behind every other run and stops for one that arrives while it trains.

        CapError, before anything is written, for a recipe over the caps or an owner at their cap of runs."""
        check_recipe_caps(recipe)
        with self._lock:  # the count and the append are one step: two quick clicks can't both pass
            self.check_room(owner)
            run_id = make_run_id(label)
            run_dir = self.run_dir(run_id)
            save_recipe(recipe, run_dir / REQUEST_FILE, header="recipe as requested from the app")
            if owner is not None:
                record_owner(run_dir, owner)
            write_status(run_dir, QUEUED, submitted=time.time(), background=background)
            self._enqueue(run_id)
            self.poll()
        return run_id

    def _is_background(self, run_id: str) -> bool:
        return bool(read_status(self.run_dir(run_id)).get("background"))

    def _enqueue(self, run_id: str) -> None:
        """Put a run in line: a background run last, any other ahead of the background runs -- and a background
        run training now is asked to make way (it stops at its next step, with a checkpoint)."""
        if self._is_background(run_id):
            self._waiting.append(run_id)
        else:
            first_background = next((i for i, other in enumerate(self._waiting) if self._is_background(other)),
                                    len(self._waiting))
            self._waiting.insert(first_background, run_id)
            self._make_way()
        self._save_waiting()

    def _make_way(self) -> None:
        """SIGTERM the background run training now, unless it is already scoring its saved adapter (nearly done)."""
        current = self._current
        if current is None or self._process is None or self._yielding == current or not self._is_background(current):
            return
        if read_status(self.run_dir(current)).get("phase") == SCORECARD_PHASE:
            return
        self._yielding = current
        self._process.send_signal(signal.SIGTERM)

    def _requeue_yielded(self, run_id: str) -> None:
        """A background run that stopped for a visitor's run goes back in line, to resume from its checkpoint."""
        run_dir = self.run_dir(run_id)
        if latest_checkpoint(run_dir) is not None:
            self._resuming.add(run_id)
        else:  # stopped before its first step: it starts again from the beginning
            (run_dir / METRICS_FILE).unlink(missing_ok=True)
        write_status(run_dir, QUEUED, error=None, pid=None, paused=time.time(), note=YIELDED_NOTE)
        self._waiting.append(run_id)

    def _save_waiting(self) -> None:
        """Write the waiting runs, in order, to runs/queue.json (a full disk keeps the queue in memory only)."""
        entries = [{"run": run_id, "resume": run_id in self._resuming} for run_id in self._waiting]
        try:
            write_json(self.runs_dir / QUEUE_FILE, {"waiting": entries})
        except OSError:
            pass

    def _restore_waiting(self) -> None:
        """The runs an earlier app process left queued, in their order (those still marked queued on disk)."""
        saved = read_json(self.runs_dir / QUEUE_FILE, {}) or {}
        for entry in saved.get("waiting") or []:
            run_id = entry.get("run") if isinstance(entry, dict) else None
            if not isinstance(run_id, str) or _SAFE_NAME.search(run_id) or run_id in self._waiting:
                continue
            if read_status(self.runs_dir / run_id).get("state") == QUEUED:
                self._waiting.append(run_id)
                if entry.get("resume"):
                    self._resuming.add(run_id)

    def start_supervisor(self, every_s: float = SUPERVISOR_SECONDS) -> None:
        """Poll the queue from a daemon thread, so finished runs are reaped and the next one starts with no page
        open (idempotent)."""
        with self._lock:
            if self._supervisor is not None and self._supervisor.is_alive():
                return
            self._supervising.clear()
            self._supervisor = threading.Thread(target=self._supervise, args=(every_s,), name="kantele-queue",
                                                daemon=True)
            self._supervisor.start()

    def stop_supervisor(self) -> None:
        """End the supervisor thread (tests; the app's ends with the process)."""
        self._supervising.set()
        thread = self._supervisor
        if thread is not None:
            thread.join(timeout=10)
        self._supervisor = None

    def _supervise(self, every_s: float) -> None:
        while not self._supervising.wait(every_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 -- a full disk or a vanished folder must not end the supervisor
                pass

    def check_room(self, owner: Owner | None) -> None:
        """CapError naming the asker's run when they already have caps().runs_per_visitor queued or training."""
        limit = caps().runs_per_visitor
        if owner is None or limit is None:  # the shell, or an app on your own machine
            return
        with self._lock:
            self.poll()
            active = ([self._current] if self._current else []) + list(self._waiting)
            theirs = [run_id for run_id in active if read_owner(self.run_dir(run_id)) in owner.digests()]
            state = "training" if theirs and theirs[0] == self._current else "queued"
        if len(theirs) >= limit:
            runs = "one run" if limit == 1 else f"{limit} runs"
            raise CapError(f"your run `{theirs[0]}` is still {state}, and this app trains {runs} per visitor at a "
                           "time -- stop it (Stop) or let it finish, then start this one")

    def _launch(self, run_id: str) -> None:
        run_dir = self.run_dir(run_id)
        command = [sys.executable, "-m", "tuning", "train", "--config", str(run_dir / REQUEST_FILE),
                   "--output", str(run_dir)]
        if run_id in self._resuming:
            self._resuming.discard(run_id)
            command.append("--resume")
        with open(run_dir / CONSOLE_FILE, "ab") as console:  # closed here once the child holds its own copy
            self._process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=Path.cwd(), env=child_environment())
        self._current = run_id
        write_status(run_dir, RUNNING, pid=self._process.pid, launched=time.time(), note=None)

    def poll(self) -> None:
        """Reap a finished process (marking a crash as failed) and start the next queued run."""
        with self._lock:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                run_dir = self.run_dir(self._current)
                state = read_status(run_dir).get("state")
                yielded = self._current == self._yielding
                if yielded and state != COMPLETED:  # stopped to let a visitor's run go first
                    self._requeue_yielded(self._current)
                elif state not in FINISHED_STATES:
                    # The trainer records its own end; no record means it was killed or crashed hard.
                    _record_failure(run_dir, crash_reason(code, run_dir))
                self._process, self._current = None, None
                self._yielding = None if yielded else self._yielding
            if self._process is None and self._waiting:
                self._launch(self._waiting.popleft())
                self._save_waiting()
            elif self._waiting and not self._is_background(self._waiting[0]):
                self._make_way()  # a visitor's run waits behind a background run (restored after a restart)

    def can_resume(self, run_id: str) -> bool:
        """True for a failed or stopped run that ended short of its steps with a checkpoint saved."""
        run_dir = self.run_dir(run_id)
        status = read_status(run_dir)
        done = status.get("total_steps") and (status.get("step") or 0) >= status["total_steps"]
        return status.get("state") in (FAILED, STOPPED) and not done and latest_checkpoint(run_dir) is not None

    def resume(self, run_id: str, owner: Owner | None = None) -> None:
        """Queue a failed or stopped run again, to continue from its last checkpoint (`train --resume`);
        it counts as `owner`'s run queued (check_room)."""
        run_dir = self.run_dir(run_id)
        with self._lock:
            self.poll()
            if run_id == self._current or run_id in self._waiting:
                raise UsageError(f"run {run_id} is already training or queued")
            state = read_status(run_dir).get("state")
            if state not in (FAILED, STOPPED):
                raise UsageError(f"run {run_id} is {state or 'not a run'}: only a failed or stopped run can resume")
            if latest_checkpoint(run_dir) is None:
                raise UsageError(f"run {run_id} saved no checkpoint to continue from -- start a new run")
            self.check_room(owner)
            write_status(run_dir, QUEUED, error=None, resumed=time.time())
            self._resuming.add(run_id)
            self._enqueue(run_id)
            self.poll()

    def stop(self, run_id: str) -> None:
        """Stop a run gracefully (SIGTERM: finish the step, save) or take it out of the queue."""
        with self._lock:
            if run_id in self._waiting:
                self._waiting.remove(run_id)
                self._save_waiting()
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
            with self._lock:  # the supervisor may have just reaped a trainer that recorded its end after our read
                status = read_status(run_dir)
                state = status.get("state", state)
                if state == RUNNING and run_id != self._current and not _alive(status.get("pid")):
                    # Started by an earlier app process that is gone, and the trainer died with it.
                    state = FAILED
                    status = _record_failure(run_dir, "training process is no longer running")
        metrics = read_metrics(run_dir)
        last = metrics[-1] if metrics else {}
        step = status.get("step") if state in FINISHED_STATES and status.get("step") else last.get("step", 0)
        view = RunView(run_id=run_id, state=state, step=step,
                       total_steps=status.get("total_steps") or last.get("total_steps", 0),
                       elapsed_s=last.get("elapsed_s", 0.0), eta_s=last.get("eta_s"), error=status.get("error"),
                       phase=status.get("phase") if state == RUNNING else None,
                       metrics=metrics, log_tail=self._log_tail(run_dir, state, log_lines))
        view.resumable = state in (FAILED, STOPPED) and self.can_resume(run_id)
        view.has_adapter = has_adapter(run_dir)
        view.background = bool(status.get("background"))
        view.paused = state == QUEUED and bool(status.get("paused")) and view.background
        if view.paused and not view.step:  # metrics of the part before the pause
            view.step = status.get("step") or 0
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
            known = set(tail.splitlines())  # the trainer logs to both files: show only what train.log lacks
            extra = "\n".join(line for line in console.splitlines()[-lines:] if line not in known)
            if extra:
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
        if current and current != self._yielding:  # a run making way stops at its next step
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

    def owned_runs(self, owner: Owner | None) -> list[str]:
        """Run ids the asker may open (theirs and the ownerless ones), newest first."""
        return [run_id for run_id in self.list_runs() if may_open(self.runs_dir / run_id, owner)]

    def owned_run_dir(self, run_id: str, owner: Owner | None) -> Path:
        """The folder of a run id a client sent, checked here on the server: RunAccessError unless it is theirs."""
        return check_owner(self.run_dir(run_id), owner)
