"""The Run object: every question about a run folder answered in one place -- above all the base model it was
trained on, resolved, so a run trained under 'auto' chats, exports and publishes on that model even after
'auto' comes to mean another one; and the scorecard read through one typed reader."""

import json
import shutil

import pytest

import tuning.models.loading as loading
from tuning.chat.side_by_side import SideBySideChat
from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, load_recipe, save_recipe
from tuning.runs.files import ENVIRONMENT_FILE
from tuning.runs.run import BaseModel, Run, Scorecard


@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = tmp_path / trained_run.name
    shutil.copytree(trained_run, copy)
    return copy


def test_a_trained_run_answers_everything_from_its_folder(trained_run):
    run = Run(trained_run)
    assert run.state() == "completed" and run.has_adapter() and run.id == trained_run.name
    assert run.base_model() == BaseModel(EMBEDDED_MODEL, hub_id=run.recorded_base_model().get("hub_id"))
    assert any("loss" in m for m in run.metrics())
    assert run.validation_file.is_file() and run.config_file.is_file() and run.adapter_dir.is_dir()
    assert run.owner_digest() is None  # trained from the shell: open to everyone


def test_auto_is_the_model_the_run_used_not_what_auto_means_now(run_copy, monkeypatch):
    recipe = load_recipe(run_copy / "config.yaml")
    recipe.model.name = AUTO_MODEL
    save_recipe(recipe, run_copy / "config.yaml")
    monkeypatch.setattr(loading, "default_model_name", lambda: "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    run = Run(run_copy)
    assert run.base_model().name == EMBEDDED_MODEL  # recorded in environment.json when it trained
    chat = SideBySideChat.from_run(run_copy)  # would fetch TinyLlama (offline: fail) if 'auto' leaked through
    assert chat.model_cfg.name == EMBEDDED_MODEL and chat.adapter_label == run.id

    environment = json.loads((run_copy / ENVIRONMENT_FILE).read_text())
    environment.pop("base_model")
    (run_copy / ENVIRONMENT_FILE).write_text(json.dumps(environment))
    assert Run(run_copy).base_model().name == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"  # recorded nothing: here's 'auto'


def test_the_scorecard_is_typed_and_a_damaged_one_reads_as_none(run_copy):
    report = {"data_file": "validation.jsonl", "base_model": "SmolLM2",
              "summary": {"questions": 2, "held_out": 5, "verdicts": {"learned": 1, "regressed": 1},
                          "metrics": {"key_facts": {"base": 0.0, "tuned": 0.5, "delta": 0.5}}},
              "questions": [{"question": "Who?", "reference": "Lönnrot", "key_facts": ["Lönnrot"], "base": "A poet",
                             "tuned": "Lönnrot", "verdict": "learned", "base_scores": {}, "tuned_scores": {}}]}
    (run_copy / "eval.json").write_text(json.dumps(report))
    card = Run(run_copy).scorecard()
    assert isinstance(card, Scorecard) and card.questions_phrase() == "2 of 5 held-out questions"
    assert card.metrics["key_facts"]["tuned"] == 0.5 and card.questions[0].tuned == "Lönnrot"
    (run_copy / "eval.json").write_text(json.dumps({"summary": {"questions": "two"}}))
    assert Run(run_copy).scorecard() is None
    (run_copy / "eval.json").unlink()
    assert Run(run_copy).scorecard() is None
