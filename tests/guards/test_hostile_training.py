"""A shared app's Train tab against hostile visitors: a model is a Hub id, 'embedded' or 'auto' -- never a local
folder, with one answer for every refusal, checked before the disk is -- a run's size is capped, and a visitor has
one run queued or training at a time. Engine tests first, then the same attacks on the real app (shared_app)."""

import os
import re
import time

import pytest
from cluster_runs import lora_adapter, zip_folder
from helpers import REPO
from visitors import KNOB_PROBES

from tuning.chat.switcher import ChatSwitcher
from tuning.config import apply_overrides, load_recipe
from tuning.guards.caps import SHARED_CAPS, CapError
from tuning.models import loading as models
from tuning.models.loading import ModelLoadError, resolve_model
from tuning.models.names import MODEL_REFUSED, ModelNameError, check_model_name, check_revision, portable_base_name
from tuning.portable.adapter_import import AdapterImportError, import_adapter
from tuning.runs import queue as runs_module
from tuning.runs.caps import check_recipe_caps, preflight
from tuning.runs.owner import Owner, new_visitor_id
from tuning.runs.queue import TrainingQueue

ALICE, BOB = Owner(new_visitor_id()), Owner(new_visitor_id())
LONG_NAME = "x" * 5000


@pytest.fixture
def local(monkeypatch):
    """An app on your own machine: not shared, no owner caps."""
    for name in ("KANTELE_SHARED", "SYSTEM", "SPACE_ID", *[k for k in os.environ if k.startswith("KANTELE_CAP_")]):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def shared(local, monkeypatch):
    """A shared app with the shipped caps."""
    monkeypatch.setenv("KANTELE_SHARED", "1")


@pytest.fixture
def other_visitors_model(tmp_path):
    """A merged model another visitor exported: a real-looking model folder on the app's disk."""
    folder = tmp_path / "runs" / "20250101-000000-theirs-abc123" / "export" / "merged"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


def refusals(check, names) -> set[str]:
    """The distinct messages check raised for names (each must be refused)."""
    messages = set()
    for name in names:
        with pytest.raises(ModelNameError) as caught:
            check(name)
        messages.add(str(caught.value))
    return messages


def stats_of(monkeypatch, needle: str) -> list[str]:
    """Record every os.stat of a path holding needle (Path.is_dir and .exists call it)."""
    seen, real = [], os.stat

    def recording(path, *args, **kwargs):
        if needle in str(path):
            seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recording)
    return seen


def kalevala(*overrides):
    return apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"), list(overrides))


# --- a model is never a local folder on a shared app -------------------------------------------------------------

def test_every_folder_gets_one_answer_before_the_disk_is_looked_at(shared, tmp_path, other_visitors_model,
                                                                   monkeypatch):
    names = [str(other_visitors_model), str(tmp_path / "no-such-folder"), "/etc", str(tmp_path / "runs"),
             "../runs", "~/models", "a/b/c", LONG_NAME, "/" + LONG_NAME, "owner/na\nme"]
    seen = stats_of(monkeypatch, str(tmp_path))
    assert refusals(check_model_name, names) == {MODEL_REFUSED}
    assert refusals(resolve_model, names) == {MODEL_REFUSED}  # the engine's one way in refuses the same
    assert seen == []  # the existing folder and the missing one were never even looked at


def test_hub_ids_and_the_embedded_model_are_what_a_shared_app_takes(shared):
    for name in ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "gpt2", "embedded", "auto"):
        assert check_model_name(f" {name} ") == name
    assert check_model_name("") == "auto"


def test_a_hub_shaped_name_is_asked_of_the_hub_never_of_a_folder_so_named(shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "theirs").mkdir(parents=True)
    (tmp_path / "runs" / "theirs" / "config.json").write_text("{}")
    asked = []

    def hub(repo_id, revision):
        asked.append(repo_id)
        raise ModelLoadError("not on the Hub (test)")

    monkeypatch.setattr(models, "_download_hub_model", hub)
    with pytest.raises(ModelLoadError, match="not on the Hub"):
        resolve_model("runs/theirs")
    assert asked == ["runs/theirs"]
    monkeypatch.delenv("KANTELE_SHARED")  # your own machine (and its CLI) keeps loading local folders
    assert resolve_model("runs/theirs").path == (tmp_path / "runs" / "theirs").resolve()


def test_a_5000_character_name_is_a_clear_error_everywhere(local, tmp_path):
    clear = r"not a model name \(5,\d{3} characters\) -- .* at most 200 characters"  # not an OSError
    for check in (check_model_name, resolve_model, portable_base_name):
        for name in (LONG_NAME, "/" + LONG_NAME, str(tmp_path) + "/" + LONG_NAME):
            with pytest.raises(ModelNameError, match=clear):
                check(name)
    for revision in ("r" * 5000, "../../etc", "/abs"):
        with pytest.raises(ModelNameError, match="not a branch, tag or commit"):
            check_revision(revision)
    assert check_revision("main") == "main" and check_revision(None) is None


def test_an_imported_adapter_on_another_visitors_model_is_refused(shared, tmp_path, other_visitors_model):
    runs = tmp_path / "imports"
    messages = set()
    for base in (str(other_visitors_model), str(tmp_path / "missing"), LONG_NAME):
        upload = zip_folder(lora_adapter(tmp_path / "made" / "adapter", base=base), tmp_path / "a.zip", inside="")
        with pytest.raises(AdapterImportError) as caught:
            import_adapter(upload, runs, ALICE)
        messages.add(str(caught.value))
        assert [p.name for p in runs.iterdir()] == []  # nothing written, not even half a run
    assert len(messages) == 1 and MODEL_REFUSED in messages.pop()
    # An adapter trained elsewhere on the embedded model records that machine's cache path: it means 'embedded'.
    upload = zip_folder(lora_adapter(tmp_path / "cluster" / "adapter"), tmp_path / "b.zip", inside="")
    assert import_adapter(upload, runs, ALICE).base_model == "embedded"


def test_a_hub_adapter_on_another_visitors_model_is_refused(shared, tmp_path, other_visitors_model, monkeypatch):
    import huggingface_hub

    def snapshot(repo_id, **kwargs):
        adapter = tmp_path / "hub" / repo_id
        lora_adapter(adapter, base=str(other_visitors_model))
        return str(adapter)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    switcher = ChatSwitcher()
    monkeypatch.setattr(switcher, "_ensure_base", lambda *args: pytest.fail("a base model was loaded"))
    with pytest.raises(ModelLoadError, match="bob/adapter") as caught:
        switcher.select_hub_adapter("bob/adapter")
    assert MODEL_REFUSED in str(caught.value)
    with pytest.raises(ModelLoadError, match="is not an adapter on the Hub"):  # not an OSError
        switcher.select_hub_adapter(LONG_NAME)


# --- a run's size is capped, and one run per visitor --------------------------------------------------------------

class FakeTrainer:
    """Stands in for the training process: runs until it is signalled."""

    def __init__(self, command, **kwargs):
        self.pid, self.returncode = os.getpid(), None

    def poll(self):
        return self.returncode

    def send_signal(self, signal):
        self.returncode = -signal


@pytest.mark.parametrize("override, refusal", [
    ("training.max_steps=1000000000", "max steps is 1,000,000,000, over this app's limit of 2,000 -- lower max steps"),
    ("training.epochs=1000", "epochs is 1,000, over this app's limit of 20 -- lower the epochs"),
    ("training.batch_size=4096", "batch size is 4,096, over this app's limit of 32 -- lower the batch size"),
    ("data.max_length=100000", "max length is 100,000, over this app's limit of 2,048 -- lower max length"),
])
def test_a_knob_over_its_cap_is_refused_before_the_queue_writes(shared, tmp_path, monkeypatch, override, refusal):
    monkeypatch.setattr(runs_module.subprocess, "Popen", FakeTrainer)  # were it queued, nothing would train
    queue = TrainingQueue(tmp_path / "runs")
    with pytest.raises(CapError) as caught:
        queue.submit(kalevala(override), owner=ALICE)
    assert refusal in str(caught.value)
    assert list(queue.runs_dir.iterdir()) == []


def test_caps_are_off_on_your_own_machine_and_the_owner_sets_them(local, monkeypatch):
    check_recipe_caps(kalevala("training.max_steps=1000000000", "training.batch_size=4096"))  # local: no cap
    monkeypatch.setenv("KANTELE_SHARED", "1")
    monkeypatch.setenv("KANTELE_CAP_TRAINING_STEPS", "5000")
    check_recipe_caps(kalevala("training.max_steps=3000"))
    with pytest.raises(CapError, match="limit of 5,000"):
        check_recipe_caps(kalevala("training.max_steps=6000"))
    monkeypatch.setenv("KANTELE_CAP_TRAINING_STEPS", "none")
    check_recipe_caps(kalevala("training.max_steps=1000000000"))
    with pytest.raises(CapError, match="epochs is nan -- set a number"):
        check_recipe_caps(kalevala("training.epochs=nan"))


def test_the_steps_epochs_make_are_capped_too(shared, monkeypatch, tiny_data, tmp_path):
    monkeypatch.setenv("KANTELE_CAP_TRAINING_STEPS", "10")
    recipe = kalevala("training.max_steps=-1", "training.epochs=2", "training.batch_size=1",
                      f"data.train=[{tiny_data['train']}]", f"data.validation=[{tiny_data['validation']}]")
    check_recipe_caps(recipe)  # each knob is within its cap ...
    with pytest.raises(CapError, match="the optimizer steps this run will take is 16, over this app's limit of 10"):
        preflight(recipe, tmp_path)  # ... but 8 rows / batch 1 x 2 epochs is 16 steps
    recipe.training.batch_size = 4
    assert preflight(recipe, tmp_path).steps == 4


def test_a_run_estimated_over_the_minutes_cap_is_refused(shared, monkeypatch, tiny_data, tmp_path):
    recipe = kalevala("training.max_steps=400", f"data.train=[{tiny_data['train']}]",
                      f"data.validation=[{tiny_data['validation']}]")
    assert preflight(recipe, tmp_path).seconds / 60 < SHARED_CAPS.run_minutes
    monkeypatch.setenv("KANTELE_CAP_RUN_MINUTES", "0.01")
    with pytest.raises(CapError, match=r"estimated training time \(minutes\) is .*, over this app's limit of 0.01"):
        preflight(recipe, tmp_path)


def test_a_visitor_has_one_run_queued_or_training(shared, tmp_path, monkeypatch):
    monkeypatch.setattr(runs_module.subprocess, "Popen", FakeTrainer)
    queue = TrainingQueue(tmp_path / "runs")
    first = queue.submit(kalevala("training.max_steps=5"), owner=ALICE)
    with pytest.raises(CapError, match=f"your run `{first}` is still training.* -- stop it"):
        queue.submit(kalevala("training.max_steps=5"), owner=ALICE)
    queued = queue.submit(kalevala("training.max_steps=5"), owner=BOB)  # another visitor still queues
    assert {p.name for p in queue.runs_dir.iterdir() if p.is_dir()} == {first, queued}  # the refused one wrote nothing
    queue.stop(first)
    second = queue.submit(kalevala("training.max_steps=5"), owner=ALICE)  # the first ended: room again
    with pytest.raises(CapError, match=f"your run `{second}` is still queued"):
        queue.check_room(ALICE)
    # Resuming an old run is queueing one too.
    monkeypatch.setattr(runs_module, "latest_checkpoint", lambda run_dir: run_dir / "checkpoints" / "checkpoint-1")
    with pytest.raises(CapError, match=f"your run `{second}`"):
        queue.resume(first, ALICE)
    queue.stop(second)
    queue.stop(queued)
    monkeypatch.delenv("KANTELE_SHARED")  # on your own machine, queue as many as you like
    queue.submit(kalevala("training.max_steps=5"), owner=ALICE)
    queue.submit(kalevala("training.max_steps=5"), owner=ALICE)


# --- the same attacks on the real shared app, through its HTTP API ------------------------------------------------

def visitor_with_kalevala(url):
    from visitors import Visitor

    visitor = Visitor(url, "hostile")
    visitor.client.predict(api_name="/load_kalevala")
    knobs = list(visitor.client.predict("kalevala", api_name="/preset_values"))
    knobs[KNOB_PROBES] = []  # no probes: the scorecard of a run cut short stays short
    return visitor, knobs


def run_folders(home) -> set[str]:
    return {p.name for p in (home / "runs").iterdir()}


def progress_of(visitor, run_id) -> str:
    return visitor.client.predict(run_id, api_name="/poll_run")[0]


@pytest.fixture
def started():
    """(visitor, run id) of every run a test got queued: stopped, and waited for, after it -- pass or fail, so the
    shared app is left serving with nothing of ours training."""
    runs = []
    yield runs
    for who, run_id in reversed(runs):  # the queued ones first: cancelled before they ever start
        who.client.predict(run_id, api_name="/stop_training")
    deadline = time.monotonic() + 240
    while any(progress_of(who, run_id).startswith(("**Training**", "**Queued**")) for who, run_id in runs):
        assert time.monotonic() < deadline, "the stopped runs did not end"
        time.sleep(1)


def start(visitor, knobs, started) -> tuple[str | None, str]:
    """Press Start training; a run it queued is remembered for the clean-up."""
    run_id, message = visitor.client.predict("kalevala", *knobs, api_name="/start_training")
    if run_id:
        started.append((visitor, run_id))
    return run_id, message


def test_the_shared_app_refuses_a_run_that_would_hog_the_slot(shared_app, started):
    url, home = shared_app
    visitor, knobs = visitor_with_kalevala(url)
    before = run_folders(home)
    knobs[2] = 1_000_000_000  # max steps
    run_id, message = start(visitor, knobs, started)
    assert run_id is None
    assert message.startswith("**Not started:** max steps is 1,000,000,000, over this app's limit of 2,000")
    knobs[2], knobs[7], knobs[8] = 2_000, 32, 16  # every knob at its cap: 2,000 steps of 512 conversations each
    run_id, message = start(visitor, knobs, started)
    assert run_id is None
    assert re.match(r"\*\*Not started:\*\* the estimated training time \(minutes\) is [\d,]+, over this app's "
                    r"limit of 60 -- ", message), message
    assert run_folders(home) == before


def test_the_shared_app_answers_every_folder_named_as_a_model_alike(shared_app, started):
    url, home = shared_app
    visitor, knobs = visitor_with_kalevala(url)
    before = run_folders(home)
    names = [LONG_NAME, "/etc", str(home / "runs"), str(home / "runs" / "no-such-run"), "../../etc/passwd"]
    answers, estimates = set(), set()
    for name in names:
        knobs[0] = name
        run_id, message = start(visitor, knobs, started)
        assert run_id is None
        answers.add(message)
        estimates.add(visitor.client.predict("kalevala", *knobs, api_name="/show_estimate"))
    assert answers == {f"**Not started:** {MODEL_REFUSED}"}
    assert estimates == {f"Can't estimate yet: {MODEL_REFUSED}"}
    assert run_folders(home) == before


def test_the_shared_app_queues_one_run_per_visitor(shared_app, started):
    url, _ = shared_app
    visitor, knobs = visitor_with_kalevala(url)
    other, _ = visitor_with_kalevala(url)
    knobs[2], knobs[11] = 1, 1  # one step, a one-question scorecard: and it is stopped right away
    first, message = start(visitor, knobs, started)
    assert first and message == f"Submitted run `{first}`.", message
    again, refused = start(visitor, knobs, started)
    assert again is None
    assert refused.startswith(f"**Not started:** your run `{first}` is still ")
    assert "-- stop it (Stop) or let it finish, then start this one" in refused
    queued, message = start(other, knobs, started)
    assert queued, message  # another visitor still queues behind it


def test_many_clicks_on_train_the_example_queue_one_example(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from tuning.runs.visitor_runs import VisitorRuns

    monkeypatch.setattr(runs_module.subprocess, "Popen", FakeTrainer)  # queued, never trained
    runs = VisitorRuns(TrainingQueue(tmp_path / "runs"))
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: runs.start_example({"KANTELE_EXAMPLE": "off"}, force=True), range(16)))
    assert len(ids) == 1 and [p.name for p in runs._queue.runs_dir.iterdir() if p.is_dir()] == list(ids)
