"""The model card: valid Hub metadata and the run's real facts."""

from huggingface_hub import ModelCard

from tuning.config import load_recipe
from tuning.hub.card import render_model_card


def test_card_metadata_and_sections(trained_run):
    text = render_model_card(trained_run, repo_id="someone/kalevala-adapter")
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.library_name == "peft"
    for heading in ("## How to use", "## Training data", "## Hyperparameters", "## Limitations"):
        assert heading in text
    assert 'PeftModel.from_pretrained' in text and '"someone/kalevala-adapter"' in text
    lora = load_recipe(trained_run / "config.yaml").lora
    assert f"| LoRA r / alpha / dropout | {lora.r} / {lora.alpha} / {lora.dropout} |" in text
    assert "8 training and 2 held-out" in text


def test_card_names_the_hardware_and_precision_the_run_used(tmp_path):
    from tuning.config import RecipeConfig, save_recipe
    from tuning.runs.files import CONFIG_FILE, ENVIRONMENT_FILE, write_json

    save_recipe(RecipeConfig(), tmp_path / CONFIG_FILE)
    write_json(tmp_path / ENVIRONMENT_FILE, {"device": {"name": "Tesla T4", "capability": "7.5",
                                                        "total_memory_gb": 15.6, "dtype": "float16"}})
    assert "| hardware, precision | Tesla T4, fp16 |" in render_model_card(tmp_path)
    write_json(tmp_path / ENVIRONMENT_FILE, {"device": "cpu (2 cores)"})  # a run from before the dtype was recorded
    assert "| hardware | cpu (2 cores) |" in render_model_card(tmp_path)
