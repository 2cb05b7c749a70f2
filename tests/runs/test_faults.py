"""Faults: a trainer killed with SIGKILL resumes losing at most one save interval; a full disk, a model that
won't load and an unreachable Hub each end in one clear message, and the queue keeps working."""

import errno
import json

import pytest
from fault_scenarios import (
    MISSING_HUB_ID,
    bad_models,
    disk_full,
    hub_adapter_unreachable,
    kill_and_resume,
    kill_child,
)
from helpers import REPO

import tuning.atomic
from tuning.atomic import disk_full_error, is_disk_full
from tuning.runs.files import latest_checkpoint, remove_incomplete_checkpoints, write_status
from tuning.runs.queue import TrainingQueue, crash_reason


@pytest.fixture
def queue(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the child runs `python -m tuning` from the repo
    queue = TrainingQueue(tmp_path / "runs")
    yield queue
    kill_child(queue)


# -- a killed trainer and resume ---------------------------------------------------------------------------------


def test_sigkill_fails_the_run_saying_so_and_resume_loses_at_most_one_save_interval(queue, tiny_data):
    result = kill_and_resume(queue, tiny_data, save_steps=2, max_steps=8)
    assert result.state_after_kill == "failed"
    assert "killed by signal 9 (SIGKILL" in result.error
    assert f"resume continues from step {result.checkpoint_step}" in result.error
    assert "killed by signal 9" in result.log_tail, "the log the page shows says it too"
    assert result.resumable
    assert result.resumed_from == result.checkpoint_step
    assert 0 < result.steps_lost <= result.save_steps
    assert result.final_state == "completed" and result.adapter
    assert result.steps == list(range(1, 9)), "every step logged exactly once across the kill"


def write_checkpoint(run_dir, step, state_text):
    folder = run_dir / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    if state_text is not None:
        (folder / "trainer_state.json").write_text(state_text)
    return folder


def test_a_checkpoint_cut_short_is_passed_over_by_resume_and_removable(tmp_path):
    whole = write_checkpoint(tmp_path, 2, json.dumps({"global_step": 2}))
    write_checkpoint(tmp_path, 4, None)  # killed before the Trainer wrote its state
    write_checkpoint(tmp_path, 6, '{"global_st')  # killed while writing it
    assert latest_checkpoint(tmp_path) == whole
    assert [p.name for p in remove_incomplete_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-2"]


def test_only_a_failed_or_stopped_run_with_a_checkpoint_resumes(queue):
    done, bare = queue.runs_dir / "20250101-000000-done-aaaaaa", queue.runs_dir / "20250101-000000-bare-bbbbbb"
    write_status(done, "completed", step=6, total_steps=6)
    write_status(bare, "failed", error="training process ended: killed by signal 9")
    with pytest.raises(ValueError, match="only a failed or stopped run can resume"):
        queue.resume(done.name)
    with pytest.raises(ValueError, match="no checkpoint to continue from -- start a new run"):
        queue.resume(bare.name)
    assert not queue.view(bare.name).resumable
    write_checkpoint(bare, 2, "{}")
    assert queue.view(bare.name).resumable


RESUME_BUTTON = 5  # poll_run's outputs: progress, loss, learning rate, log, compare, resume


def test_the_train_tab_offers_resume_for_a_resumable_run_of_the_visitors_own(queue, monkeypatch):
    from tuning.runs.owner import Owner, new_visitor_id, record_owner
    from tuning.runs.visitor_runs import VisitorRuns
    from ui import train_tab

    monkeypatch.setattr(train_tab, "RUNS", VisitorRuns(queue))
    resumed = []
    monkeypatch.setattr(queue, "resume", lambda run_id, owner=None: resumed.append(run_id))
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    run = queue.runs_dir / "20250101-000000-killed-cccccc"
    write_status(run, "failed", error="training process ended: killed by signal 9")
    record_owner(run, alice)
    assert train_tab.poll_run(run.name, alice)[RESUME_BUTTON]["visible"] is False  # no checkpoint yet
    write_checkpoint(run, 2, "{}")
    assert train_tab.poll_run(run.name, alice)[RESUME_BUTTON]["visible"] is True
    assert train_tab.poll_run(run.name, bob)[RESUME_BUTTON]["visible"] is False
    assert "Not resumed" in train_tab.resume_training(run.name, bob) and resumed == []
    assert "Resuming" in train_tab.resume_training(run.name, alice) and resumed == [run.name]


def test_crash_reasons_name_the_signal_and_the_way_on(tmp_path):
    write_checkpoint(tmp_path, 4, "{}")
    assert crash_reason(-9, tmp_path) == ("training process ended: killed by signal 9 (SIGKILL, often out of memory)"
                                          " -- resume continues from step 4 (its last checkpoint)")
    assert "exit code 1 -- no checkpoint was saved yet" in crash_reason(1, tmp_path / "elsewhere")


# -- a full disk -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dev_full", [False, True], ids=["tmpfs", "dev-full"])
def test_a_full_disk_fails_the_run_in_one_clear_line_and_the_queue_goes_on(tiny_data, monkeypatch, dev_full):
    monkeypatch.chdir(REPO)
    result = disk_full(tiny_data, force_dev_full=dev_full)
    assert result.state == "failed"
    assert result.error.startswith("disk full: no space left on the disk holding"), result.error
    for fix in ("free some space", "training.save_steps", "KANTELE_HOME"):
        assert fix in result.error
    assert "\n" not in result.error
    assert not result.adapter_dir and not result.adapter, "no adapter, whole or half-written"
    assert result.partial_checkpoints == [], "the checkpoint the disk cut short is removed"
    assert result.queue_idle
    assert result.next_state == "completed" and result.next_adapter, "the next run trains once space is freed"


def test_disk_full_is_recognised_however_a_library_says_it(tmp_path, monkeypatch):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    chained = RuntimeError("saving the checkpoint failed")
    chained.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(chained)
    torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # measured
    monkeypatch.setattr(tuning.atomic, "free_bytes", lambda folder: 0)
    assert is_disk_full(torch_says, tmp_path)
    monkeypatch.setattr(tuning.atomic, "free_bytes", lambda folder: 10 * 2**30)
    assert not is_disk_full(torch_says, tmp_path)
    assert not is_disk_full(PermissionError(errno.EACCES, "Permission denied"))


def test_the_disk_full_message_names_the_disk_and_every_way_out(tmp_path):
    error = disk_full_error(tmp_path)
    assert error.errno == errno.ENOSPC and str(tmp_path) in str(error) and "MB free" in str(error)
    assert not str(error).startswith("[Errno")


# -- a model that won't load, an unreachable Hub -----------------------------------------------------------------


def test_a_model_that_wont_load_fails_the_run_naming_the_model_and_the_fix(queue, tiny_data, tmp_path):
    from_hub, damaged = bad_models(queue, tiny_data, tmp_path)
    assert from_hub.state == "failed"
    assert MISSING_HUB_ID in from_hub.message and "HF_HUB_OFFLINE" in from_hub.message
    assert "'embedded'" in from_hub.message
    assert damaged.state == "failed"
    assert "damaged-model" in damaged.message and "download it again" in damaged.message
    assert "\n" not in damaged.message
    assert queue.active_run() is None


def test_a_hub_adapter_offline_or_unreachable_is_refused_with_the_reason():
    offline, unreachable = hub_adapter_unreachable()
    assert offline.state == "refused" and "HF_HUB_OFFLINE is set" in offline.message
    assert unreachable.state == "refused" and "can't reach the Hub at http://127.0.0.1:" in unreachable.message
    assert "pick a local run" in unreachable.message
    assert unreachable.seconds < 30, "no long retry loop while the visitor waits"
