"""A queue that runs by itself: the supervisor starts queued runs with no page polling, the queue survives a
restart in its order, and a background run (the shared example) makes way for a visitor's run, then resumes."""

import json
import os
import signal
import time

import pytest
from helpers import REPO
from test_queue import tiny_recipe

from tuning.runs.files import has_adapter, latest_checkpoint, read_metrics, read_status
from tuning.runs.owner import Owner, new_visitor_id
from tuning.runs.queue import QUEUE_FILE, TrainingQueue


def wait_on_disk(condition, timeout=300):
    """Wait by reading the run folders only: no poll(), no view() -- nothing a page would do."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def state(queue, run_id) -> str | None:
    return read_status(queue.run_dir(run_id)).get("state")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the child runs `python -m tuning` from the repo
    return tmp_path / "runs"


def test_restarted_app_starts_its_queued_runs_in_order_with_no_page_open(runs_dir, tiny_data):
    before = TrainingQueue(runs_dir)
    doomed = before.submit(tiny_recipe(tiny_data, "training.max_steps=200", "training.save_steps=1"), label="doomed")
    first = before.submit(tiny_recipe(tiny_data, "training.max_steps=2"), label="first")
    second = before.submit(tiny_recipe(tiny_data, "training.max_steps=2"), label="second")
    saved = json.loads((runs_dir / QUEUE_FILE).read_text())
    assert [entry["run"] for entry in saved["waiting"]] == [first, second]

    # The app dies with `doomed` training (its trainer with it) and the other two queued: `before` is never
    # polled again.
    wait_on_disk(lambda: latest_checkpoint(before.run_dir(doomed)) is not None)
    pid = read_status(before.run_dir(doomed))["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # the dead app's child is reaped by the system, not left a zombie of this test process

    after = TrainingQueue(runs_dir)
    after.start_supervisor(every_s=0.5)
    try:
        wait_on_disk(lambda: state(after, second) == "completed")
    finally:
        after.stop_supervisor()
    assert state(after, first) == "completed" and has_adapter(after.run_dir(second))
    assert read_status(after.run_dir(first))["launched"] < read_status(after.run_dir(second))["launched"]
    view = after.view(doomed)
    assert view.state == "failed" and view.resumable  # as before: the killed run resumes from its checkpoint
    assert json.loads((runs_dir / QUEUE_FILE).read_text())["waiting"] == []


def test_a_visitor_run_goes_before_the_background_run_which_resumes_and_finishes(runs_dir, tiny_data):
    queue = TrainingQueue(runs_dir)
    queue.start_supervisor(every_s=0.5)
    visitor = Owner(new_visitor_id())
    try:
        example = queue.submit(tiny_recipe(tiny_data, "training.max_steps=16"), label="example", background=True)
        wait_on_disk(lambda: len(read_metrics(queue.run_dir(example))) >= 2)
        mine = queue.submit(tiny_recipe(tiny_data, "training.max_steps=2"), label="mine", owner=visitor)

        # The example stops at its next step, with a checkpoint, and waits behind the visitor's run.
        wait_on_disk(lambda: state(queue, mine) in ("running", "completed"))
        paused = queue.view(example)
        assert paused.state == "queued" and paused.paused and paused.queue_position == 1
        paused_at = paused.step
        assert 0 < paused_at < 16 and latest_checkpoint(queue.run_dir(example)) is not None

        wait_on_disk(lambda: state(queue, example) == "completed")
    finally:
        queue.stop_supervisor()
    assert state(queue, mine) == "completed"
    mine_status, example_status = read_status(queue.run_dir(mine)), read_status(queue.run_dir(example))
    assert example_status["step"] == 16 and example_status["launched"] > mine_status["launched"]
    steps = [m["step"] for m in read_metrics(queue.run_dir(example)) if "loss" in m]
    assert steps == sorted(steps) and steps[-1] == 16  # resumed from its checkpoint: no step trained twice
    assert "resum" in (queue.run_dir(example) / "train.log").read_text().lower()


def test_a_background_run_waits_behind_runs_queued_after_it(runs_dir, tiny_data):
    queue = TrainingQueue(runs_dir)
    busy = queue.submit(tiny_recipe(tiny_data, "training.max_steps=200"), label="busy")
    background = queue.submit(tiny_recipe(tiny_data), label="example", background=True)
    visitor = queue.submit(tiny_recipe(tiny_data), label="visitor")
    try:
        assert queue.view(visitor).queue_position == 1 and queue.view(background).queue_position == 2
    finally:
        for run_id in (visitor, background, busy):
            queue.stop(run_id)
        wait_on_disk(lambda: (queue.poll() or True) and state(queue, busy) in ("stopped", "failed", "completed"))
