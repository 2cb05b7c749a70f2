"""The shared Kalevala example: queued once per base model, read-only for visitors, preselected in Chat only when
a visitor has no finished run of their own, installed from a deploy's bundled_runs/, and switched by
KANTELE_EXAMPLE."""

import shutil

import pytest
from helpers import REPO

from tuning.config import ConfigError
from tuning.errors import UsageError
from tuning.runs.example import (
    example_mode,
    example_progress,
    example_recipe,
    example_runs,
    install_bundled_runs,
    is_example,
    mark_example,
)
from tuning.runs.files import BUNDLED_RUNS_DIR, write_status
from tuning.runs.owner import Owner, new_visitor_id, record_owner
from tuning.runs.queue import RunView, TrainingQueue
from tuning.runs.visitor_runs import VisitorRuns


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    return VisitorRuns(TrainingQueue(tmp_path / "runs"))


def copy_run(trained_run, runs_dir, name):
    target = runs_dir / name
    shutil.copytree(trained_run, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def test_the_switch_reads_auto_or_off_and_names_the_fix_for_anything_else():
    assert example_mode({}) == "auto" and example_mode({"KANTELE_EXAMPLE": "OFF"}) == "off"
    with pytest.raises(ConfigError, match="KANTELE_EXAMPLE='sometimes': use one of auto, off"):
        example_mode({"KANTELE_EXAMPLE": "sometimes"})


def test_the_example_recipe_is_the_kalevala_preset_for_the_model_in_use_with_paths_the_trainer_finds(tmp_path):
    recipe = example_recipe({})
    assert recipe.model.name == "embedded" and recipe.training.max_steps == -1
    assert all(path.startswith(str(REPO)) and (REPO / path).is_file() for path in recipe.data.train)
    own = tmp_path / "mine.yaml"
    own.write_text((REPO / "configs" / "kalevala.yaml").read_text().replace("epochs: 6", "epochs: 1"))
    assert example_recipe({"KANTELE_EXAMPLE_RECIPE": str(own)}).training.epochs == 1


def test_off_queues_nothing(runs):
    assert runs.start_example({"KANTELE_EXAMPLE": "off"}) is None
    assert runs.example_view() is None and not any(runs._queue.runs_dir.iterdir())


def test_a_bundled_run_is_installed_once_and_is_the_example_with_nothing_queued(runs, trained_run, tmp_path):
    app_root = tmp_path / "app"
    copy_run(trained_run, app_root / BUNDLED_RUNS_DIR, "20261201-kalevala-example-abc123")
    runs_dir = runs._queue.runs_dir
    assert install_bundled_runs(runs_dir, app_root) == ["20261201-kalevala-example-abc123"]
    assert install_bundled_runs(runs_dir, app_root) == []
    assert is_example(runs_dir / "20261201-kalevala-example-abc123")
    assert [run.id for run in example_runs(runs_dir, "embedded")] == ["20261201-kalevala-example-abc123"]
    assert runs.start_example({"KANTELE_EXAMPLE": "auto"}) == "20261201-kalevala-example-abc123"
    assert len(list(runs_dir.iterdir())) == 1  # finished already: no second one queued
    assert runs.example_view().state == "completed"


def test_every_visitor_sees_the_finished_example_but_none_can_stop_or_resume_it(runs, trained_run):
    example = copy_run(trained_run, runs._queue.runs_dir, "20261201-000000-kalevala-example-aaaaaa")
    mark_example(example, "embedded")
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    for visitor in (alice, bob):
        assert runs.finished(visitor) == [example.name] and runs.preselected(visitor) == example.name
        for change in (runs.stop, runs.resume):
            with pytest.raises(UsageError, match="shared by every visitor"):
                change(example.name, visitor)

    # Alice's own finished run comes first for her; Bob still opens on the example.
    mine = copy_run(trained_run, runs._queue.runs_dir, "20261130-000000-mine-bbbbbb")  # older than the example
    record_owner(mine, alice)
    assert runs.preselected(alice) == mine.name and runs.preselected(bob) == example.name


def test_a_paused_example_is_not_offered_while_its_adapter_is_half_trained(runs, trained_run):
    example = copy_run(trained_run, runs._queue.runs_dir, "20261201-000000-kalevala-example-aaaaaa")
    mark_example(example, "embedded")
    write_status(example, "queued", paused=1.0, background=True)
    runs._queue._waiting.append(example.name)  # paused for a visitor's run, waiting to resume
    visitor = Owner(new_visitor_id())
    assert runs.finished(visitor) == [] and runs.preselected(visitor) is None


@pytest.mark.parametrize(("view", "line"), [
    (RunView("x", "running", step=120, total_steps=408, eta_s=420.0),
     "**Kalevala example**: step 120 of 408, ready in about 7 minutes."),
    (RunView("x", "running"), "**Kalevala example**: starting (loading the model and the data)..."),
    (RunView("x", "queued", step=120, total_steps=408, paused=True, background=True),
     "**Kalevala example**: paused at step 120 of 408 while a visitor's run trains first; it resumes by itself "
     "afterwards."),
    (RunView("x", "queued", queue_position=3), "**Kalevala example**: waiting for the trainer (2 ahead of it)."),
    (RunView("x", "completed", has_adapter=True),
     "**Kalevala example**: ready -- ask a question below, the right pane answers with it."),
])
def test_progress_reads_as_a_sentence(view, line):
    assert example_progress(view) == line
