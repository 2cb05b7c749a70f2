"""Recipes: the shipped ones load, unknown keys and wrong types are errors that name the key."""

from pathlib import Path

import pytest

from tuning.config import (
    ConfigError,
    RecipeConfig,
    apply_overrides,
    apply_settings,
    describe_fields,
    load_recipe,
    recipe_from_dict,
    save_recipe,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["kalevala.yaml", "kalevala-tinyllama.yaml"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(CONFIGS / name)
    assert recipe.data.train == ["datasets/kalevala/train.jsonl"]
    assert recipe.model.load_in_4bit


def test_tinyllama_recipe_is_the_gpu_kalevala_recipe():
    # Its derivation from the CPU recipe is checked in tests/hardware/test_gpu_check.py.
    recipe = load_recipe(CONFIGS / "kalevala-tinyllama.yaml")
    assert recipe.model.name == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (16, 16, 0.0)
    assert (recipe.training.learning_rate, recipe.training.lr_scheduler) == (8e-4, "cosine")
    assert (recipe.training.batch_size, recipe.training.grad_accum) == (8, 1)
    assert recipe.model.double_quant


def test_unknown_key_names_the_key_and_the_closest_known_one(tmp_path):
    path = tmp_path / "stale.yaml"
    path.write_text("data:\n  max_seq_length: 512\n")
    with pytest.raises(ConfigError, match=r"unknown key 'data.max_seq_length'.*did you mean 'max_length'"):
        load_recipe(path)


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'optimizer'"):
        recipe_from_dict({"optimizer": {"name": "adamw"}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'training.batch_size' should be int"):
        recipe_from_dict({"training": {"batch_size": "eight"}})
    with pytest.raises(ConfigError, match=r"'model.load_in_4bit' should be bool"):
        recipe_from_dict({"model": {"load_in_4bit": "yes please"}})


def test_yaml_scientific_notation_is_read_as_a_float():
    # PyYAML reads "2e-4" (no dot) as a string; the loader must still give a float.
    assert recipe_from_dict({"training": {"learning_rate": "2e-4"}}).training.learning_rate == 2e-4


def test_a_single_file_becomes_a_list():
    assert recipe_from_dict({"data": {"train": "a.jsonl"}}).data.train == ["a.jsonl"]


def test_overrides_and_round_trip(tmp_path):
    recipe = apply_overrides(RecipeConfig(), ["training.max_steps=7", "lora.target_modules=[q_proj, v_proj]"])
    assert recipe.training.max_steps == 7
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    save_recipe(recipe, tmp_path / "r.yaml", header="a header")
    assert (tmp_path / "r.yaml").read_text().startswith("# a header\n")
    assert load_recipe(tmp_path / "r.yaml") == recipe


def test_bad_override_says_the_expected_form():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(RecipeConfig(), ["max_steps=3"])
    with pytest.raises(ConfigError, match="unknown key 'training.max_step'"):
        apply_overrides(RecipeConfig(), ["training.max_step=3"])


def test_a_set_value_that_is_not_yaml_says_to_quote_it():
    with pytest.raises(ConfigError, match=r"not valid YAML -- put it in quotes"):
        apply_overrides(RecipeConfig(), ["model.name=[unclosed"])


# Each bad value as the Train tab passes it (typed, from a form) and as `--set` spells it.
BAD_SETTINGS = [
    ("training.epochs", None, "training.epochs="),  # an emptied field
    ("training.max_steps", None, "training.max_steps="),
    ("training.batch_size", 2.5, "training.batch_size=2.5"),
    ("lora.r", "eight", "lora.r=eight"),
    ("model.load_in_4bit", "yes please", "model.load_in_4bit=yes please"),
    ("model.name", None, "model.name="),
    ("training.probes", ["forgetting", "gossip"], "training.probes=[forgetting, gossip]"),  # names the known ones
]
# Good values both ways; 2e-4 is text to YAML, and a float all the same.
GOOD_SETTINGS = {"model.name": "embedded", "model.load_in_4bit": False, "training.epochs": 2.0,
                 "training.max_steps": 60, "training.learning_rate": 2e-4, "lora.r": 4, "lora.dropout": 0.0,
                 "data.max_length": 256, "training.scorecard_questions": 8,
                 "training.probes": ["forgetting", "retrieval"]}
GOOD_SET = ["model.name=embedded", "model.load_in_4bit=false", "training.epochs=2", "training.max_steps=60",
            "training.learning_rate=2e-4", "lora.r=4", "lora.dropout=0", "data.max_length=256",
            "training.scorecard_questions=8", "training.probes=[forgetting, retrieval]"]


def refusal(apply) -> str:
    with pytest.raises(ConfigError) as caught:
        apply()
    return str(caught.value)


@pytest.mark.parametrize(("key", "value", "text"), BAD_SETTINGS)
def test_the_train_tab_and_set_refuse_a_bad_value_alike(key, value, text):
    from ui.train_tab import KNOBS, build_recipe, preset_settings

    preset = load_recipe(CONFIGS / "kalevala.yaml")
    by_cli = refusal(lambda: apply_overrides(preset, [text]))
    assert f"'{key}'" in by_cli  # names the key, and what it takes
    assert refusal(lambda: apply_settings(preset, {key: value})) == by_cli
    assert key in KNOBS
    knobs = {**preset_settings("kalevala"), key: value}
    dataset = {"train_file": "train.jsonl", "validation_file": "validation.jsonl"}
    assert refusal(lambda: build_recipe("kalevala", knobs, dataset)) == by_cli


def test_the_train_tab_and_set_make_the_same_recipe_of_good_values():
    from ui.train_tab import KNOBS, build_recipe, preset_settings

    preset = load_recipe(CONFIGS / "kalevala.yaml")
    by_cli = apply_overrides(preset, GOOD_SET)
    assert apply_settings(preset, GOOD_SETTINGS) == by_cli
    assert by_cli.training.learning_rate == 2e-4 and by_cli.lora.r == 4 and not by_cli.model.load_in_4bit
    knobs = {**preset_settings("kalevala"), **GOOD_SETTINGS}
    assert list(knobs) == list(KNOBS)  # every knob is a recipe key the preset has
    from visitors import KNOB_MAX_STEPS, KNOB_PROBES  # the HTTP API clients' positions

    assert list(KNOBS).index("training.max_steps") == KNOB_MAX_STEPS
    assert list(KNOBS).index("training.probes") == KNOB_PROBES
    dataset = {"train_file": "train.jsonl", "validation_file": "validation.jsonl"}
    by_tab = build_recipe("kalevala", knobs, dataset)
    # The tab's sources are the session's documents (none here), never the preset's.
    assert by_tab == apply_overrides(preset, [*GOOD_SET, "data.train=train.jsonl", "data.validation=validation.jsonl",
                                              "data.sources=[]"])


def test_the_train_tab_takes_a_presets_own_values_unchanged():
    from ui.train_tab import build_recipe, preset_names, preset_settings

    dataset = {"train_file": "train.jsonl", "validation_file": "validation.jsonl"}
    for name in preset_names():
        recipe = build_recipe(name, preset_settings(name), dataset)
        preset = load_recipe(CONFIGS / f"{name}.yaml")
        preset.data.train, preset.data.validation, preset.data.sources = ["train.jsonl"], ["validation.jsonl"], []
        assert recipe == preset


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_every_key_has_help():
    for section, keys in describe_fields().items():
        for key, text in keys.items():
            assert text, f"{section}.{key} has no help text"


def test_report_to_takes_the_known_trackers_and_refuses_others_naming_them(tmp_path):
    assert RecipeConfig().training.report_to == []  # default: metrics.jsonl only
    recipe = apply_overrides(RecipeConfig(), ["training.report_to=[trackio, tensorboard]"])
    assert recipe.training.report_to == ["trackio", "tensorboard"]
    assert apply_overrides(RecipeConfig(), ["training.report_to=tensorboard"]).training.report_to == ["tensorboard"]
    path = tmp_path / "tracked.yaml"
    save_recipe(recipe, path)
    assert load_recipe(path).training.report_to == ["trackio", "tensorboard"]
    for bad in ("[wandb]", "[tensorboard, mlflow]", "none"):
        with pytest.raises(ConfigError, match=r"'training.report_to': no tracker called .* -- use any of trackio, "
                                              r"tensorboard, or \[\] for none"):
            apply_overrides(RecipeConfig(), [f"training.report_to={bad}"])
    with pytest.raises(ConfigError, match=r"'training.report_to' should be a list of trackers"):
        recipe_from_dict({"training": {"report_to": {"trackio": True}}})
