"""Recipes: the shipped ones load, unknown keys and wrong types are errors that name the key."""

from pathlib import Path

import pytest

from tuning.config import (
    ConfigError,
    RecipeConfig,
    apply_overrides,
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
    # Its derivation from the CPU recipe is checked in tests/test_gpu_check.py.
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
