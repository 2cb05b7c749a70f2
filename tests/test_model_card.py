"""The model card: valid Hub metadata and the run's real facts."""

from huggingface_hub import ModelCard

from tuning.config import load_recipe
from tuning.model_card import render_model_card


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
