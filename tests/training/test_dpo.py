"""A run that continues a finished run's adapter: DPO against that adapter (TRL's DPOTrainer), an SFT top-up with
replayed rows, and the refusals that come before any model loads. Real model, real training, a few steps; the
session's trained run is the parent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, train_command, write_jsonl

from tuning.config import ConfigError, RecipeConfig, apply_overrides, load_recipe, recipe_from_dict, save_recipe
from tuning.errors import UsageError
from tuning.runs.files import (
    ADAPTER_DIR,
    CONFIG_FILE,
    DATA_FILE,
    ENVIRONMENT_FILE,
    EVAL_FILE,
    LINEAGE_FILE,
    LOG_FILE,
    read_metrics,
    read_status,
    write_json,
    write_status,
)
from tuning.runs.run import Run
from tuning.training.curves import REWARDS_PNG
from tuning.training.parent import PARENT_FIX, check_parent, fingerprint_adapter

DPO_RECIPE = REPO / "configs" / "kalevala-dpo.yaml"
# Pairs on the tiny run's facts: the right answer against a plausible mix-up.
TINY_PAIRS = [
    {"prompt": "Who compiled the Kalevala?", "chosen": "Elias Lönnrot compiled the Kalevala.",
     "rejected": "Jean Sibelius compiled the Kalevala."},
    {"prompt": "Which smith forged the Sampo?", "chosen": "Ilmarinen forged the Sampo.",
     "rejected": "Väinämöinen forged the Sampo."},
    {"prompt": "Who rules Pohjola?", "chosen": "Louhi rules Pohjola.", "rejected": "Ukko rules Pohjola."},
    {"prompt": "How many poems are in the 1849 Kalevala?", "chosen": "The 1849 Kalevala has 50 poems.",
     "rejected": "The 1849 Kalevala has 32 poems."},
]


def dpo_command(run_dir: Path, parent: Path, pairs: Path, *extra: str) -> list[str]:
    """`python -m tuning train` on the shipped DPO recipe, continuing `parent`, shrunk to a few steps."""
    overrides = [f"training.parent_run={parent}", f"data.train=[{pairs}]", "training.max_steps=4",
                 "training.batch_size=4", "training.learning_rate=0.001", "training.logging_steps=1",
                 "data.max_length=64", "training.scorecard_questions=2", "training.probes=[]", *extra]
    command = [sys.executable, "-m", "tuning", "train", "--config", str(DPO_RECIPE), "--output", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    return command


def test_dpo_widens_the_margin_against_its_parent_and_records_the_lineage(tmp_path, trained_run):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", TINY_PAIRS)
    run_dir = tmp_path / "dpo"
    result = subprocess.run(dpo_command(run_dir, trained_run, pairs), cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_status(run_dir)["state"] == "completed"

    steps = [r for r in read_metrics(run_dir) if "rewards/margins" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for record in steps:
        assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen",
                "logps/rejected", "tokens_per_s"} <= set(record)
    # Step 1 is scored before any update: the policy is the parent's adapter, and so is the reference, so every
    # reward is exactly 0 (against the bare base model they would not be: the parent's adapter moved it).
    assert all(abs(steps[0][key]) < 1e-4 for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"))
    assert steps[-1]["rewards/margins"] > 0.05 and steps[-1]["rewards/accuracies"] == 1
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert (run_dir / REWARDS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run, parent = Run(run_dir), Run(trained_run)
    assert run.parent() == Run(trained_run.resolve())
    lineage = run.lineage()
    assert lineage["method"] == "dpo" and lineage["parent"]["id"] == parent.id
    assert lineage["parent"]["adapter_sha256"] == fingerprint_adapter(parent.adapter_dir)
    assert fingerprint_adapter(run.adapter_dir) != fingerprint_adapter(parent.adapter_dir)
    assert not (run.adapter_dir / "ref").exists(), "the frozen reference copy is not part of the run's adapter"
    assert run.recipe().lora == parent.recipe().lora  # the parent's adapter, so the parent's shape

    kept = [json.loads(line) for line in run.preferences_file.read_text(encoding="utf-8").splitlines()]
    assert [row["prompt"][-1]["content"] for row in kept] == [pair["prompt"] for pair in TINY_PAIRS]
    data = run.data_summary()
    assert data["method"] == "dpo" and data["train_examples"] == 4 and len(data["preferences_fingerprint"]) == 64
    # The scorecard and its probes read the run's own data/: the parent's rows, copied.
    for name in ("train_file", "validation_file"):
        assert getattr(run, name).read_bytes() == getattr(parent, name).read_bytes()

    report = json.loads((run_dir / EVAL_FILE).read_text(encoding="utf-8"))
    assert report["summary"]["questions"] == 2
    block = report["parent"]
    assert block["run"] == parent.id and block["answers_from"] == "the parent's eval.json"
    parent_answers = {row.question: row.tuned for row in parent.scorecard().questions}
    assert [row["parent"] for row in block["questions"]] == [parent_answers[r["question"]] for r in report["questions"]]
    assert sum(block["changes"].values()) == 2 and set(block["key_fact"]) == {"parent", "tuned"}
    assert run.scorecard().parent["run"] == parent.id

    from tuning.hub.card import render_model_card

    card = render_model_card(run_dir)
    assert f"DPO on top of `{parent.id}`" in card and data["preferences_fingerprint"][:12] in card
    assert "- dpo" in card and "4 preference pairs and 2 held-out" in card

    # Publishing its data pushes the pairs it trained on, not the parent's rows copied in for the scorecard.
    from tuning.hub.push import plan_dataset_push, validate_card

    plan = plan_dataset_push(run_dir, "alice/kalevala-pairs")
    assert set(plan.files) == {"data/preferences.jsonl", "README.md"}
    assert plan.files["data/preferences.jsonl"] == run.preferences_file
    validate_card(plan.files["README.md"], "dataset")
    assert f"continuing run `{parent.id}`" in plan.files["README.md"] and "path: data/preferences.jsonl" in \
        plan.files["README.md"]


def test_the_reference_is_a_frozen_copy_of_the_parents_saved_adapter(tmp_path, trained_run):
    import torch
    from safetensors.torch import load_file

    from tuning.models.loading import load_tokenizer, resolve_model
    from tuning.training.dpo import REFERENCE_ADAPTER, build_dpo_trainer, prepare_preferences
    from tuning.training.parent import inherit_from_parent
    from tuning.training.train import load_model_for_training

    pairs = write_jsonl(tmp_path / "pairs.jsonl", TINY_PAIRS)
    recipe = apply_overrides(load_recipe(DPO_RECIPE), [f"training.parent_run={trained_run}", f"data.train=[{pairs}]",
                                                      "data.max_length=64", "training.threads=1"])
    parent = check_parent(recipe)
    recipe = inherit_from_parent(recipe, parent)
    model_ref = resolve_model(recipe.model.name, recipe.model.revision)
    tokenizer = load_tokenizer(model_ref.path)
    encoded = prepare_preferences(recipe, tokenizer, tmp_path / "run", parent)
    model = load_model_for_training(recipe, model_ref.path, parent=parent)
    trainer = build_dpo_trainer(recipe, tmp_path / "run", model, tokenizer, encoded, callbacks=[])

    saved = load_file(str(parent.run.adapter_dir / "adapter_model.safetensors"))
    seen = {"default": 0, REFERENCE_ADAPTER: 0}
    for name, parameter in trainer.model.named_parameters():
        for adapter in seen:
            if f".{adapter}." in name:
                seen[adapter] += 1
                assert torch.equal(parameter.detach().float(), saved[name.replace(f".{adapter}.", ".")].float()), name
                assert parameter.requires_grad == (adapter == "default"), name
                assert parameter.dtype == torch.float32, name  # the trained one's updates, as for SFT
    assert seen["default"] == seen[REFERENCE_ADAPTER] == len(saved)
    assert trainer.ref_model is None  # no second base model: the reference is the adapter copy
    # Its log-probs were taken while the trainer was built; that left the 4-bit weights as they were (bitsandbytes
    # repacks them for CPU inference when run outside training mode, and training through those lost 2/3 of the
    # gradient), and in the dataset beside each pair.
    from bitsandbytes.nn import Linear4bit

    states = [module.weight.quant_state for module in trainer.model.modules() if isinstance(module, Linear4bit)]
    assert states and not any(getattr(state, "packing_format_for_cpu", False) for state in states)
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)


def test_an_sft_top_up_replays_the_parents_rows_and_is_scored_against_it(tmp_path, trained_run):
    corrections = write_jsonl(tmp_path / "corrections.jsonl", [
        {"prompt": "Who rules Pohjola?", "response": "Louhi, the mistress of the North, rules Pohjola."},
        {"prompt": "What is the Sampo?", "response": "A magic mill that grinds out grain, salt and gold."},
    ])
    run_dir = tmp_path / "top-up"
    command = train_command(run_dir, {"train": corrections, "validation": corrections},
                            f"training.parent_run={trained_run}", "training.replay=3", "data.validation=[]",
                            "training.max_steps=2", "lora.r=4", "training.scorecard_questions=2",
                            "data.system_prompt=You answer about the Kalevala.")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run, parent = Run(run_dir), Run(trained_run)

    data = run.data_summary()
    assert (data["new_examples"], data["replay_examples"], data["train_examples"]) == (2, 3, 5)
    assert data["replay_from"] == parent.id
    trained = [json.loads(line) for line in run.train_file.read_text(encoding="utf-8").splitlines()]
    from tuning.data.examples import fingerprint_examples, user_prompts

    replayed = trained[2:]
    assert data["replay_fingerprint"] == fingerprint_examples(replayed)
    parents_rows = [json.loads(line) for line in parent.train_file.read_text(encoding="utf-8").splitlines()]
    assert all(row in parents_rows for row in replayed)
    assert "Who rules Pohjola?" not in user_prompts(replayed), "a corrected question's old answer isn't replayed"
    # Without data.validation it is scored on the parent's held-out questions, not on a split of its corrections.
    assert run.validation_file.read_bytes() == parent.validation_file.read_bytes()
    assert run.lineage()["method"] == "sft" and run.recipe().lora.r == parent.recipe().lora.r != 4
    assert "lora section ignored" in (run_dir / LOG_FILE).read_text()

    block = json.loads((run_dir / EVAL_FILE).read_text(encoding="utf-8"))["parent"]
    # Another system prompt: the parent's own scorecard answered other prompts, so its adapter answers again.
    assert block["answers_from"] == "the parent's adapter, answering now" and len(block["questions"]) == 2
    from tuning.hub.card import render_model_card

    assert f"SFT top-up of `{parent.id}`" in render_model_card(run_dir)


# --- refusals, before any model loads --------------------------------------------------------------------------


def fake_run(folder: Path, model: str = "embedded", state: str = "completed", revision: str | None = None) -> Path:
    """A run folder with what the parent checks read: recipe, environment, status, adapter config."""
    recipe = recipe_from_dict({"model": {"name": model}})
    folder.mkdir(parents=True)
    save_recipe(recipe, folder / CONFIG_FILE)
    write_json(folder / ENVIRONMENT_FILE, {"base_model": {"name": model, "hub_id": model if "/" in model else None,
                                                          "revision": revision}})
    write_status(folder, state)
    (folder / ADAPTER_DIR).mkdir()
    (folder / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    return folder


def dpo_recipe(parent: Path | str) -> RecipeConfig:
    return apply_overrides(load_recipe(DPO_RECIPE), [f"training.parent_run={parent}"])


def test_dpo_without_a_parent_is_refused_with_the_fix(tmp_path):
    with pytest.raises(UsageError, match="training.method dpo continues a finished run") as refused:
        check_parent(dpo_recipe("''"))
    assert PARENT_FIX in str(refused.value)
    with pytest.raises(UsageError, match="is not a run folder"):
        check_parent(dpo_recipe(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="training.replay=5 mixes in rows of a parent run"):
        check_parent(apply_overrides(RecipeConfig(), ["training.replay=5"]))


@pytest.mark.parametrize("state", ["running", "failed", "queued"])
def test_a_parent_that_is_not_finished_is_refused(tmp_path, state):
    parent = fake_run(tmp_path / "parent", state=state)
    with pytest.raises(UsageError, match=f"is {state}; a child continues a finished run's saved adapter") as refused:
        check_parent(dpo_recipe(parent))
    assert "--resume" in str(refused.value) and PARENT_FIX in str(refused.value)
    (parent / ADAPTER_DIR / "adapter_config.json").unlink()
    write_status(parent, "completed")
    with pytest.raises(UsageError, match="is completed and has no adapter"):
        check_parent(dpo_recipe(parent))


def test_a_parent_on_another_base_model_is_refused_naming_the_model_to_use(tmp_path):
    parent = fake_run(tmp_path / "parent", model="HuggingFaceTB/SmolLM2-360M-Instruct", revision="abc123")
    with pytest.raises(UsageError, match="was trained on HuggingFaceTB/SmolLM2-360M-Instruct@abc123, this recipe's "
                                         "model is embedded") as refused:
        check_parent(dpo_recipe(parent))
    assert "--set model.name=HuggingFaceTB/SmolLM2-360M-Instruct --set model.revision=abc123" in str(refused.value)
    other_commit = apply_overrides(dpo_recipe(parent), ["model.name=HuggingFaceTB/SmolLM2-360M-Instruct",
                                                        "model.revision=def456"])
    with pytest.raises(UsageError, match="an adapter only fits the base model it was trained on"):
        check_parent(other_commit)
    same = apply_overrides(dpo_recipe(parent), ["model.name=HuggingFaceTB/SmolLM2-360M-Instruct"])
    assert check_parent(same).base.revision == "abc123"  # the child is pinned to the parent's commit


def test_the_cli_refuses_dpo_without_a_parent_before_loading_a_model(tmp_path):
    run_dir = tmp_path / "orphan"
    result = subprocess.run([sys.executable, "-m", "tuning", "train", "--config", str(DPO_RECIPE), "--output",
                             str(run_dir), "--set", "training.parent_run=''"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and PARENT_FIX in result.stderr
    assert "base model:" not in (run_dir / LOG_FILE).read_text(), "refused before the model was even resolved"
    assert read_status(run_dir)["state"] == "failed" and not (run_dir / ADAPTER_DIR).exists()


# --- the recipe keys, and the card ------------------------------------------------------------------------------


def test_method_and_dpo_keys_round_trip_and_a_bad_method_names_the_choices(tmp_path):
    recipe = load_recipe(DPO_RECIPE)
    assert (recipe.training.method, recipe.training.parent_run) == ("dpo", "runs/kalevala-cpu")
    assert recipe.data.train == ["datasets/kalevala/preferences.jsonl"]
    changed = apply_overrides(recipe, ["training.dpo_beta=0.25", "training.parent_run=runs/other", "training.replay=0"])
    save_recipe(changed, tmp_path / "round.yaml")
    again = load_recipe(tmp_path / "round.yaml")
    assert (again.training.dpo_beta, again.training.parent_run, again.training.method) == (0.25, "runs/other", "dpo")
    assert RecipeConfig().training.method == "sft" and RecipeConfig().training.replay == 0
    with pytest.raises(ConfigError, match="'training.method' is 'ppo' -- use one of sft, dpo"):
        apply_overrides(recipe, ["training.method=ppo"])
    with pytest.raises(ConfigError, match="'training.replay' is -1"):
        apply_overrides(recipe, ["training.replay=-1"])
    with pytest.raises(ConfigError, match="'training.dpo_beta' should be float"):
        apply_overrides(recipe, ["training.dpo_beta=high"])


def test_the_shipped_preference_pairs_load(tmp_path):
    from tuning.data.preferences import load_preferences

    loaded = load_preferences(REPO / "datasets" / "kalevala" / "preferences.jsonl")
    assert loaded.report.kept == 12 and loaded.report.duplicates_removed == 0
    # The recipe's arithmetic: 12 pairs / batch 4 = 3 steps an epoch.
    assert len(loaded.rows) / load_recipe(DPO_RECIPE).training.batch_size == 3


def test_the_card_of_a_child_run_names_its_parent_and_data(tmp_path):
    from tuning.hub.card import render_model_card

    run_dir = tmp_path / "child"
    run_dir.mkdir()
    save_recipe(load_recipe(DPO_RECIPE), run_dir / CONFIG_FILE)
    write_json(run_dir / DATA_FILE, {"train_examples": 12, "preferences_fingerprint": "f" * 64,
                                     "validation_examples": 58})
    write_json(run_dir / LINEAGE_FILE, {"method": "dpo", "parent": {"id": "kalevala-cpu", "path": "/x",
                                                                    "adapter_sha256": "a" * 64}})
    card = render_model_card(run_dir)
    assert "DPO on top of `kalevala-cpu` (its adapter `aaaaaaaaaaaa`" in card and "`ffffffffffff`" in card
    assert "beta 0.1" in card
    top_up = load_recipe(REPO / "configs" / "kalevala.yaml")
    save_recipe(top_up, run_dir / CONFIG_FILE)
    write_json(run_dir / DATA_FILE, {"new_examples": 3, "new_fingerprint": "b" * 64, "replay_examples": 20,
                                     "replay_fingerprint": "c" * 64})
    write_json(run_dir / LINEAGE_FILE, {"method": "sft", "parent": {"id": "kalevala-cpu", "adapter_sha256": "a" * 64}})
    card = render_model_card(run_dir)
    assert ("SFT top-up of `kalevala-cpu` (its adapter `aaaaaaaaaaaa`): 3 new conversations (fingerprint "
            "`bbbbbbbbbbbb`), with 20 of its training rows replayed (fingerprint `cccccccccccc`).") in card
    assert Run(run_dir).parent() is None  # a lineage without a path names no folder to open


def test_a_dpo_records_metrics_line_reads_as_a_person_reads_it():
    from tuning.training.callbacks import format_metrics

    line = format_metrics({"step": 3, "total_steps": 12, "loss": 0.61, "rewards/margins": 0.1234,
                           "rewards/accuracies": 0.75, "learning_rate": 5e-5})
    assert line == "step 3/12 · loss 0.610 · reward margin 0.123 · chosen wins 75% · lr 5e-5"
