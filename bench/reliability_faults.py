"""Faults, caused for real and reported (issue 8): a trainer killed with SIGKILL and resumed, a full disk,
a model that won't load, an unreachable Hub -- first on the engine's own objects (the training queue the app
uses, the chat switcher), then through a live app server (`python app.py` on 127.0.0.1) that must keep
answering after each.

- kill + resume: the CPU recipe on the embedded model, tiny data, a checkpoint every 3 steps; SIGKILL on the
  last step before the next save; the steps lost (finished steps trained again) against the save interval;
- disk full: the runs folder on a 200 MB tmpfs (a checkpoint is ~117 MB), or a checkpoint file linked to
  /dev/full where mounting is not permitted;
- bad model: a Hub id that can't be fetched, a local folder whose weights are cut short;
- Hub unreachable: the Chat tab's adapter from the Hub (HF_HUB_OFFLINE set; no Hub answering), a push.

    .venv/bin/python bench/reliability_faults.py

`measure()` returns [(figure, value as text)] for docs/RELIABILITY.md; run as a script it prints them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # run from anywhere; the scenarios live in tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this machine has no Hub; set before huggingface_hub loads

from app_fault_scenarios import app_faults  # noqa: E402
from fault_scenarios import (  # noqa: E402
    bad_models,
    disk_full,
    hub_adapter_unreachable,
    kill_and_resume,
    kill_child,
    push_with_hub_unreachable,
)
from helpers import TINY_TRAIN, TINY_VALIDATION, write_jsonl  # noqa: E402

from tuning.runs.queue import TrainingQueue  # noqa: E402

SAVE_STEPS = 3


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _kill_figures(queue: TrainingQueue, data: dict) -> tuple[list[tuple[str, str]], Path]:
    # Killed on the last step before the next save: the most a kill between two saves can lose.
    result = kill_and_resume(queue, data, save_steps=SAVE_STEPS, max_steps=3 * SAVE_STEPS, kill_after=SAVE_STEPS - 1)
    whole = result.steps == list(range(1, result.max_steps + 1))
    return [
        ("SIGKILL mid-run: status", result.state_after_kill),
        ("SIGKILL mid-run: message shown", result.error),
        ("SIGKILL mid-run: the log tail shown says so", _yes("killed by signal 9" in result.log_tail)),
        ("SIGKILL mid-run: Resume offered", _yes(result.resumable)),
        ("resume: save interval", f"{result.save_steps} steps"),
        ("resume: killed after step / last whole checkpoint",
         f"{result.killed_at_step} / {result.checkpoint_step} (resumed from {result.resumed_from})"),
        ("resume: steps lost (finished, then trained again)",
         f"{result.steps_lost} (at most one save interval: {result.save_steps}) -- "
         f"{'within' if 0 <= result.steps_lost <= result.save_steps else 'OVER'}"),
        ("resume: run completed with an adapter, every step logged once",
         _yes(result.final_state == "completed" and result.adapter and whole)),
        ("resume: time from Resume to completed", f"{result.resume_seconds:.0f} s"),
    ], result.run_dir


def _disk_figures(data: dict) -> list[tuple[str, str]]:
    result = disk_full(data)
    return [
        ("disk full: made by", result.how),
        ("disk full: status", result.state),
        ("disk full: message shown", result.error),
        ("disk full: adapter or cut-short checkpoint left behind",
         "none" if not (result.adapter_dir or result.partial_checkpoints) else
         f"adapter/ {result.adapter_dir}, checkpoints {result.partial_checkpoints}"),
        ("disk full: queue free for the next run", _yes(result.queue_idle)),
        ("disk full: next run after freeing space", f"{result.next_state}, adapter {_yes(result.next_adapter)}"),
    ]


def measure() -> list[tuple[str, str]]:
    """Run every fault scenario once; figures as (name, value)."""
    figures: list[tuple[str, str]] = []
    started, cwd = time.monotonic(), os.getcwd()
    os.chdir(ROOT)  # the queue's children run `python -m tuning` from the repo
    try:
        figures += _run_all()
    finally:
        os.chdir(cwd)
    figures.append(("fault scenarios: total time", f"{time.monotonic() - started:.0f} s"))
    return figures


def _run_all() -> list[tuple[str, str]]:
    """Engine scenarios first (the queue, the chat switcher), then the same faults through a live app."""
    figures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="kantele-faults-") as folder:
        folder = Path(folder)
        data = {"train": write_jsonl(folder / "train.jsonl", TINY_TRAIN),
                "validation": write_jsonl(folder / "validation.jsonl", TINY_VALIDATION)}
        queue = TrainingQueue(folder / "runs")
        try:
            kill_figures, finished_run = _kill_figures(queue, data)
            figures += kill_figures
            figures += _disk_figures(data)
            for outcome in bad_models(queue, data, folder):
                figures.append((f"bad model, {outcome.fault}", f"{outcome.state} after {outcome.seconds:.0f} s: "
                                                               f"{outcome.message}"))
        finally:
            kill_child(queue)
        for outcome in [*hub_adapter_unreachable(), push_with_hub_unreachable(finished_run, folder)]:
            figures.append((f"Hub: {outcome.fault}",
                            f"{outcome.state} after {outcome.seconds:.1f} s: {outcome.message}"))
        outcomes, note = app_faults(folder / "app-home")
        figures.append(("app server under faults", note))
        for outcome in outcomes:
            figures.append((f"app, {outcome.fault}: still serving (page 200 + API call)", _yes(outcome.survived)))
            figures.append((f"app, {outcome.fault}: message shown", outcome.message))
    return figures


if __name__ == "__main__":
    for name, value in measure():
        print(f"{name}: {value}")
