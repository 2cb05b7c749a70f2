"""Experiment tracking (training.report_to): a short real run logs to TensorBoard and trackio inside its own folder
(nothing in the Hugging Face cache, no Space), metrics.jsonl as before; without report_to there is no logs folder;
DPO logs the same way; the Train tab shows a visitor their own run's logs and no one else's."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, train_command

from tuning.config import RecipeConfig, apply_overrides
from tuning.runs.files import read_metrics, read_status
from tuning.training.tracking import LOGS_DIR, TRACKIO_PROJECT, logs_dir, run_logs

TRACKED = "training.report_to=[trackio, tensorboard]"
QUICK = ("training.max_steps=2", "training.scorecard=false")  # 8 rows, batch 4: one epoch, evaluated at its end


def train(run_dir: Path, data: dict, *extra: str, env: dict | None = None) -> None:
    result = subprocess.run(train_command(run_dir, data, *QUICK, *extra), cwd=REPO, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_status(run_dir)["state"] == "completed"


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r.get("loss") is not None}


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_data) -> tuple[Path, Path]:
    """A 2-step run with both trackers, whose environment names a trackio Space (to be ignored) and a Hugging Face
    home of its own (where trackio keeps its store unless told otherwise); (run folder, that home)."""
    folder = tmp_path_factory.mktemp("tracked")
    hf_home = folder / "hf-home"
    env = {**os.environ, "HF_HOME": str(hf_home), "TRACKIO_SPACE_ID": "someone/a-public-space"}
    train(folder / "run", tiny_data, TRACKED, env=env)
    return folder / "run", hf_home


def test_tensorboard_events_in_the_run_folder_hold_the_losses_metrics_jsonl_has(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    losses = train_losses(run_dir)
    assert sorted(losses) == [1, 2]  # metrics.jsonl, which the app reads, is written as before
    events = EventAccumulator(str(logs_dir(run_dir, "tensorboard")))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("train/loss")}
    assert sorted(logged) == [1, 2]
    assert all(logged[step] == pytest.approx(losses[step], abs=1e-4) for step in losses)
    assert {"train/learning_rate", "eval/loss"} <= set(events.Tags()["scalars"])


def test_trackio_keeps_the_metrics_in_the_run_folder_and_sends_nothing_anywhere(tracked_run):
    run_dir, hf_home = tracked_run
    store = logs_dir(run_dir, "trackio")
    env = {**os.environ, "TRACKIO_DIR": str(store)}
    asked = subprocess.run([str(Path(sys.executable).parent / "trackio"), "get", "metric", "--project",
                            TRACKIO_PROJECT, "--run", run_dir.name, "--metric", "train/loss", "--json"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert asked.returncode == 0, asked.stderr[-3000:]
    values = [point["value"] for point in json.loads(asked.stdout)["values"]]
    assert values == pytest.approx([loss for _, loss in sorted(train_losses(run_dir).items())], abs=1e-4)
    with sqlite3.connect(store / f"{TRACKIO_PROJECT}.db") as db:  # no Space was recorded for the project
        assert db.execute("SELECT COUNT(*) FROM project_metadata WHERE key LIKE '%space%'").fetchone() == (0,)
    assert not (hf_home / "trackio").exists()  # trackio's default store
    assert [logs.tracker for logs in run_logs(run_dir)] == ["trackio", "tensorboard"]


def test_without_report_to_a_run_has_no_logs_folder(trained_run):
    from tuning.runs.run import Run

    assert Run(trained_run).recipe().training.report_to == []  # the session's shared run: the default
    assert train_losses(trained_run)  # metrics.jsonl as ever
    assert not (trained_run / LOGS_DIR).exists() and run_logs(trained_run) == []


def test_dpo_reports_to_the_same_trackers_in_its_own_run_folder(tmp_path, monkeypatch):
    from tuning.training.dpo import dpo_config

    for name in ("TRACKIO_DIR", "TENSORBOARD_LOGGING_DIR", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.setenv(name, "somewhere else")  # restored after the test
    recipe = apply_overrides(RecipeConfig(), [TRACKED, "training.method=dpo", "model.compute_dtype=float32"])
    config = dpo_config(recipe, tmp_path / "dpo-run")
    assert config.report_to == ["trackio", "tensorboard"] and config.run_name == "dpo-run"
    assert config.project == TRACKIO_PROJECT and config.trackio_space_id is None
    assert config.trackio_static_space_id is False  # no Space made after training either
    assert os.environ["TRACKIO_DIR"] == str((tmp_path / "dpo-run").resolve() / LOGS_DIR / "trackio")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str((tmp_path / "dpo-run").resolve() / LOGS_DIR / "tensorboard")
    assert "TRACKIO_SPACE_ID" not in os.environ and "TRACKIO_SERVER_URL" not in os.environ
    untracked = apply_overrides(recipe, ["training.report_to=[]"])
    assert dpo_config(untracked, tmp_path / "untracked").report_to == []  # "none"


def test_a_tracker_that_isnt_installed_is_named_with_the_fix(tmp_path, monkeypatch):
    import importlib.util

    from tuning.errors import UsageError
    from tuning.training.tracking import report_arguments

    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "trackio" else installed(name))
    with pytest.raises(UsageError, match=r"needs trackio, which isn't installed -- `pip install -r requirements.txt`"):
        report_arguments(apply_overrides(RecipeConfig(), [TRACKED]), tmp_path / "run", environ={})


def test_the_train_tab_shows_a_visitor_their_own_runs_logs_and_no_one_elses(tracked_run, tmp_path, monkeypatch):
    from tuning.runs.owner import Owner, new_visitor_id, record_owner
    from tuning.runs.queue import TrainingQueue
    from tuning.runs.visitor_runs import VisitorRuns
    from ui import tracking_panel

    monkeypatch.setattr("ui.messages.APP_DATA", tmp_path)  # the app's folder: paths are shown relative to it
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))  # where the zip is made
    (tmp_path / "temp").mkdir()
    queue = TrainingQueue(tmp_path / "runs")
    monkeypatch.setattr(tracking_panel, "RUNS", VisitorRuns(queue))
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    tracked, plain = "20250101-000000-tracked-aaaaaa", "20250101-000000-plain-bbbbbb"
    shutil.copytree(tracked_run[0], tmp_path / "runs" / tracked, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(tracked_run[0], tmp_path / "runs" / plain, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    for run_id in (tracked, plain):
        record_owner(tmp_path / "runs" / run_id, alice)

    text, archive = tracking_panel.show_tracking_logs(tracked, alice)
    assert str(tmp_path) not in text  # no server paths: the commands run from the app's folder
    assert f"tensorboard --logdir runs/{tracked}/logs/tensorboard" in text
    assert f"TRACKIO_DIR=runs/{tracked}/logs/trackio trackio show --project {TRACKIO_PROJECT}" in text
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
    assert f"logs/trackio/{TRACKIO_PROJECT}.db" in names
    assert any(name.startswith("logs/tensorboard/events.out.tfevents") for name in names)

    text, archive = tracking_panel.show_tracking_logs(tracked, bob)
    assert archive is None and "Can't show its logs" in text and "tensorboard" not in text
    text, archive = tracking_panel.show_tracking_logs(plain, alice)
    assert archive is None and "no tracking logs" in text
