"""Fault scenarios run for real on the engine's objects (the training queue the app uses, the chat switcher):
a trainer killed with SIGKILL and resumed, a disk that fills up, a model that won't load, an unreachable Hub.
Each returns what happened; tests/runs/test_faults.py asserts on it, bench/reliability_faults.py reports it, and
tests/app_fault_scenarios.py causes the same faults through a live app server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from helpers import FEW_STEPS, REPO, free_port

from tuning.config import apply_overrides, load_recipe
from tuning.runs.files import (
    ADAPTER_DIR,
    CHECKPOINT_STATE_FILE,
    CHECKPOINTS_DIR,
    LOG_FILE,
    checkpoint_step,
    has_adapter,
    is_complete_checkpoint,
    latest_checkpoint,
    read_metrics,
    read_status,
)
from tuning.runs.queue import TrainingQueue

# The tiny few-step recipe without the scorecard (it loads the base once more and answers questions).
QUICK = [*FEW_STEPS, "training.scorecard=false"]
RUN_TIMEOUT_S = 300
# The CPU recipe's LoRA (r=32, all linear layers) is 39 MB; a checkpoint adds AdamW's two moments (78 MB)
# and is ~117 MB. 200 MB holds one checkpoint plus the adapter (156 MB) but not two checkpoints (234 MB):
# a run saving every step fills it on its second save, and a run saving once fits.
SMALL_DISK_MB = 200
MISSING_HUB_ID = "kantele-tests/no-such-model"
MISSING_ADAPTER_ID = "kantele-tests/no-such-adapter"


def fault_recipe(data: dict, *overrides: str):
    """The Kalevala CPU recipe shrunk to a few steps on the tiny data, plus overrides."""
    recipe = load_recipe(REPO / "configs" / "kalevala.yaml")
    return apply_overrides(recipe, [*QUICK, f"data.train=[{data['train']}]", f"data.validation=[{data['validation']}]",
                                    *overrides])


def wait_until(condition, queue: TrainingQueue, what: str, timeout: float = RUN_TIMEOUT_S) -> None:
    """Poll the queue until condition() holds; TimeoutError naming what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        queue.poll()
        time.sleep(0.1)


def _within(condition, seconds: float) -> bool:
    """True once condition() holds, False if it doesn't within seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def logged_steps(run_dir: Path) -> list[int]:
    """The training steps in metrics.jsonl, in file order (evaluation lines left out)."""
    return [record["step"] for record in read_metrics(run_dir) if "loss" in record]


def kill_child(queue: TrainingQueue) -> None:
    """SIGKILL the queue's training process if one runs (test cleanup)."""
    process = queue._process  # noqa: SLF001 -- cleanup must reach the child however the test ended
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=30)


# -- SIGKILL mid-run, then resume ------------------------------------------------------------------------------


@dataclass
class KillResume:
    """A run killed with SIGKILL after a checkpoint, then resumed through the queue."""

    save_steps: int
    max_steps: int
    run_dir: Path | None = None
    checkpoint_step: int = 0  # newest whole checkpoint when the process died
    killed_at_step: int = 0  # last step the process finished (logged every step)
    state_after_kill: str = ""
    error: str = ""
    log_tail: str = ""
    resumable: bool = False
    resumed_from: int | None = None  # the step train.log says it resumed from
    final_state: str = ""
    steps: list[int] = field(default_factory=list)  # logged steps after the resume, in order
    adapter: bool = False
    resume_seconds: float = 0.0  # resume() to completion

    @property
    def steps_lost(self) -> int:
        """Finished steps whose work died with the process and had to be trained again."""
        return self.killed_at_step - self.checkpoint_step


def kill_and_resume(queue: TrainingQueue, data: dict, save_steps: int = 2, max_steps: int = 8,
                    kill_after: int = 1) -> KillResume:
    """Train, SIGKILL the trainer once kill_after steps past a checkpoint are logged (kill_after < save_steps:
    before the next save), check how the failure shows, then resume it through the queue."""
    result = KillResume(save_steps=save_steps, max_steps=max_steps)
    run_id = queue.submit(fault_recipe(data, f"training.max_steps={max_steps}", f"training.save_steps={save_steps}",
                                       "training.logging_steps=1"), label="killed")
    run_dir = result.run_dir = queue.run_dir(run_id)

    def past_a_checkpoint() -> bool:
        checkpoint = latest_checkpoint(run_dir)
        last = max(logged_steps(run_dir), default=0)
        return checkpoint is not None and last >= checkpoint_step(checkpoint) + kill_after

    wait_until(past_a_checkpoint, queue, f"step {kill_after} after a checkpoint to be logged")
    os.kill(read_status(run_dir)["pid"], signal.SIGKILL)
    wait_until(lambda: queue.view(run_id).finished, queue, "the killed run to show as finished", timeout=60)
    view = queue.view(run_id)
    result.checkpoint_step = checkpoint_step(latest_checkpoint(run_dir))
    result.killed_at_step = max(logged_steps(run_dir))
    result.state_after_kill, result.error, result.log_tail = view.state, view.error or "", view.log_tail
    result.resumable = view.resumable

    started = time.monotonic()
    queue.resume(run_id)
    wait_until(lambda: queue.view(run_id).finished, queue, "the resumed run to finish")
    result.resume_seconds = time.monotonic() - started
    result.final_state = queue.view(run_id).state
    found = re.findall(r"resuming from \S*checkpoint-(\d+)", (run_dir / LOG_FILE).read_text(encoding="utf-8"))
    result.resumed_from = int(found[-1]) if found else None
    result.steps = logged_steps(run_dir)
    result.adapter = has_adapter(run_dir)
    return result


# -- a full disk -----------------------------------------------------------------------------------------------


def mount_tmpfs(folder: Path, size_mb: int) -> bool:
    """Mount a tmpfs of size_mb on folder; False where mounting isn't permitted (not root, no mount)."""
    if not shutil.which("mount"):
        return False
    command = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def unmount(folder: Path) -> None:
    """Unmount folder (lazily if a process still holds a file there)."""
    if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@contextmanager
def small_disk(size_mb: int):
    """Yield a temp folder on a tmpfs of size_mb (None where mounting isn't permitted); unmounted at the end."""
    folder = Path(tempfile.mkdtemp(prefix="kantele-small-disk-"))
    mounted = mount_tmpfs(folder, size_mb)
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            unmount(folder)
        folder.rmdir()


@dataclass
class DiskFull:
    """A run whose disk filled up, and the run after space was freed."""

    how: str  # what made the disk full
    state: str = ""
    error: str = ""
    log_tail: str = ""
    adapter_dir: bool = False  # anything at adapter/ (half-written or not)
    adapter: bool = False  # a loadable adapter
    partial_checkpoints: list[str] = field(default_factory=list)  # checkpoints cut short and left behind
    queue_idle: bool = False  # nothing left "training" in the queue
    next_state: str = ""  # the next run's end, after the failed run's space was freed
    next_adapter: bool = False


def disk_full(data: dict, force_dev_full: bool = False) -> DiskFull:
    """A run on a small tmpfs (or, where mounting is not permitted, a checkpoint file that is /dev/full)."""
    if not force_dev_full:
        with small_disk(SMALL_DISK_MB) as disk:
            if disk is not None:
                return _fill_disk(TrainingQueue(disk / "runs"), data, None, f"tmpfs of {SMALL_DISK_MB} MB")
    with tempfile.TemporaryDirectory(prefix="kantele-dev-full-") as folder:
        return _fill_disk(TrainingQueue(Path(folder) / "runs"), data, "/dev/full",
                          "a checkpoint file linked to /dev/full (no tmpfs mount permitted)")


def _fill_disk(queue: TrainingQueue, data: dict, dev_full: str | None, how: str) -> DiskFull:
    result = DiskFull(how=how)
    try:
        run_id = queue.submit(fault_recipe(data, "training.max_steps=4", "training.save_steps=1"), label="full")
        run_dir = queue.run_dir(run_id)
        if dev_full:
            # The Trainer writes the first checkpoint's state file in place (weights go via a temp file and a
            # rename, which would replace the link): the write lands on /dev/full and fails with ENOSPC.
            first = run_dir / CHECKPOINTS_DIR / "checkpoint-1"
            first.mkdir(parents=True)
            (first / CHECKPOINT_STATE_FILE).symlink_to(dev_full)
        wait_until(lambda: queue.view(run_id).finished, queue, "the run on the full disk to end")
        view = queue.view(run_id)
        result.state, result.error, result.log_tail = view.state, view.error or "", view.log_tail
        result.adapter_dir = (run_dir / ADAPTER_DIR).exists()
        result.adapter = has_adapter(run_dir)
        result.partial_checkpoints = [p.name for p in (run_dir / CHECKPOINTS_DIR).glob("checkpoint-*")
                                      if not is_complete_checkpoint(p)]
        # The trainer records its failure before its process has quite exited: give it a moment to.
        result.queue_idle = _within(lambda: queue.active_run() is None, seconds=30)
        shutil.rmtree(run_dir)  # what the message says first: free some space
        next_id = queue.submit(fault_recipe(data, "training.max_steps=2", "training.save_steps=2"), label="after")
        wait_until(lambda: queue.view(next_id).finished, queue, "the run after the full disk to end")
        result.next_state, result.next_adapter = queue.view(next_id).state, has_adapter(queue.run_dir(next_id))
    finally:
        kill_child(queue)
    return result


# -- a model that won't load -----------------------------------------------------------------------------------


def damaged_model_folder(folder: Path) -> Path:
    """A copy of the embedded model whose weights file is cut short, like an interrupted download."""
    from tuning.models.loading import resolve_model

    source = resolve_model("embedded").path
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy2(path, folder / path.name)
    for weights in source.glob("*.safetensors"):
        with open(weights, "rb") as whole, open(folder / weights.name, "wb") as cut:
            cut.write(whole.read(2**20))
    return folder


@dataclass
class Outcome:
    """How one fault ended: the state, the message shown, and how long it took to say so."""

    fault: str
    state: str
    message: str
    seconds: float


def bad_models(queue: TrainingQueue, data: dict, scratch: Path) -> list[Outcome]:
    """Train on a Hub id that can't be fetched and on a local folder with damaged weights."""
    outcomes = []
    cases = [("Hub id that can't be fetched", MISSING_HUB_ID),
             ("local folder with cut-short weights", str(damaged_model_folder(scratch / "damaged-model")))]
    try:
        for fault, name in cases:
            started = time.monotonic()
            run_id = queue.submit(fault_recipe(data, f"model.name={name}"), label="bad-model")
            wait_until(lambda run_id=run_id: queue.view(run_id).finished, queue, f"the run on {name} to end")
            view = queue.view(run_id)
            outcomes.append(Outcome(fault, view.state, view.error or "", time.monotonic() - started))
    finally:
        kill_child(queue)
    return outcomes


# -- an unreachable Hub ----------------------------------------------------------------------------------------


@contextmanager
def hub_at(endpoint: str | None, offline: bool):
    """huggingface_hub in this process aimed at endpoint (None: unchanged), with HF_HUB_OFFLINE as given."""
    from huggingface_hub import constants

    saved = constants.ENDPOINT, constants.HF_HUB_OFFLINE
    constants.ENDPOINT = endpoint or constants.ENDPOINT
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        constants.ENDPOINT, constants.HF_HUB_OFFLINE = saved


def hub_adapter_unreachable() -> list[Outcome]:
    """The Chat tab's 'adapter from the Hub' with HF_HUB_OFFLINE set and with no Hub answering."""
    from tuning.chat.switcher import ChatSwitcher
    from tuning.models.loading import ModelLoadError

    outcomes = []
    for fault, endpoint, offline in [("Hub adapter with HF_HUB_OFFLINE=1", None, True),
                                     ("Hub adapter, Hub unreachable", f"http://127.0.0.1:{free_port()}", False)]:
        started = time.monotonic()
        with hub_at(endpoint, offline):
            try:
                ChatSwitcher().select_hub_adapter(MISSING_ADAPTER_ID)
                state, message = "loaded", ""
            except ModelLoadError as error:
                state, message = "refused", str(error)
        outcomes.append(Outcome(fault, state, message, time.monotonic() - started))
    return outcomes


def push_with_hub_unreachable(run_dir: Path, scratch: Path) -> Outcome:
    """`python -m tuning push` of a finished run while no Hub answers (a token is set)."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(scratch / "hf-home"),
           "HF_TOKEN": "hf_NotARealToken0000000000000000000"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tuning", "push", "--run", str(run_dir), "--repo",
                             "alice/kalevala-adapter"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return Outcome("push with the Hub unreachable", f"exit code {result.returncode}", message,
                   time.monotonic() - started)
