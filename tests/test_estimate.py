"""Pre-flight estimates: parameter counts match the real model, time follows measured throughput."""

from helpers import REPO

from tuning.config import apply_overrides, load_recipe
from tuning.estimate import estimate_recipe


def test_estimate_matches_the_real_model_and_data(tiny_data, tmp_path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tuning.models import lora_config, resolve_model

    recipe = apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"),
                             [f"data.train=[{tiny_data['train']}]", "training.epochs=2", "training.batch_size=4"])
    estimate = estimate_recipe(recipe, tmp_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model("embedded").path),
                           lora_config(recipe.lora))
    trainable, total = model.get_nb_trainable_parameters()
    assert estimate.trainable_params == trainable
    assert estimate.total_params == total - trainable
    assert estimate.steps == 4  # 8 rows / batch 4 x 2 epochs
    assert estimate.tokens_per_s_source == "recipe default"
    assert estimate.seconds == estimate.total_tokens / estimate.tokens_per_s
    assert "trainable parameters" in estimate.summary()


def test_estimate_uses_throughput_measured_by_earlier_runs(trained_run, tiny_data):
    recipe = load_recipe(trained_run / "config.yaml")
    estimate = estimate_recipe(recipe, trained_run.parent)
    assert estimate.tokens_per_s_source == "measured on 1 earlier run"
