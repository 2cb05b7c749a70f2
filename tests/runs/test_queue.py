"""The training queue: one process at a time, the next starts by itself, crashes show as failed."""

import os
import signal
import time

import pytest
from helpers import FEW_STEPS, REPO

from tuning.config import apply_overrides, load_recipe
from tuning.runs.files import has_adapter, read_status
from tuning.runs.queue import TrainingQueue, make_run_id


def tiny_recipe(tiny_data, *extra):
    recipe = load_recipe(REPO / "configs" / "kalevala.yaml")
    return apply_overrides(recipe, [*FEW_STEPS, f"data.train=[{tiny_data['train']}]",
                                    f"data.validation=[{tiny_data['validation']}]", *extra])


def wait_for(condition, timeout=300, queue=None):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if queue:
            queue.poll()
        time.sleep(0.3)


@pytest.fixture
def queue(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the child runs `python -m tuning` from the repo
    return TrainingQueue(tmp_path / "runs", estimate_seconds=lambda run_dir: 42.0)


def test_second_run_waits_then_starts_by_itself(queue, tiny_data):
    first = queue.submit(tiny_recipe(tiny_data, "training.max_steps=3"), label="first")
    second = queue.submit(tiny_recipe(tiny_data, "training.max_steps=2"), label="second")
    assert queue.active_run() == first
    waiting = queue.view(second)
    assert waiting.state == "queued" and waiting.queue_position == 1
    assert waiting.wait_s is not None and waiting.wait_s > 0
    wait_for(lambda: queue.view(second).state == "completed", queue=queue)
    assert queue.view(first).state == "completed"
    assert has_adapter(queue.run_dir(first)) and has_adapter(queue.run_dir(second))
    assert queue.view(second).step == 2


def test_killed_training_is_reported_failed_with_its_log(queue, tiny_data):
    run_id = queue.submit(tiny_recipe(tiny_data, "training.max_steps=200"), label="doomed")
    wait_for(lambda: queue.view(run_id).step >= 1, queue=queue)
    os.kill(read_status(queue.run_dir(run_id))["pid"], signal.SIGKILL)
    wait_for(lambda: queue.view(run_id).state == "failed", timeout=60, queue=queue)
    view = queue.view(run_id)
    assert "signal 9" in view.error
    assert "metrics" in view.log_tail
    assert queue.active_run() is None


def test_stop_cancels_a_queued_run_and_gracefully_ends_a_running_one(queue, tiny_data):
    running = queue.submit(tiny_recipe(tiny_data, "training.max_steps=200"), label="long")
    queued = queue.submit(tiny_recipe(tiny_data), label="never")
    queue.stop(queued)
    assert queue.view(queued).state == "stopped"
    wait_for(lambda: queue.view(running).step >= 1, queue=queue)
    queue.stop(running)
    wait_for(lambda: queue.view(running).state == "stopped", queue=queue)
    assert has_adapter(queue.run_dir(running))
    assert not queue.run_dir(queued).joinpath("status.json").read_text().count("running")


def test_run_ids_never_come_from_user_paths(queue):
    assert "/" not in make_run_id("../../etc/passwd")
    with pytest.raises(ValueError):
        queue.run_dir("../outside")


def test_chat_is_offered_once_the_adapter_is_saved_not_before():
    from tuning.runs.files import COMPLETED, FAILED, RUNNING, SCORECARD_PHASE
    from tuning.runs.queue import RunView

    assert RunView("r", RUNNING, phase=SCORECARD_PHASE, has_adapter=True).adapter_ready  # scorecard still running
    assert RunView("r", COMPLETED, step=6, has_adapter=True).adapter_ready
    assert not RunView("r", RUNNING, step=3).adapter_ready
    assert not RunView("r", FAILED, step=5).adapter_ready  # killed before it saved an adapter
