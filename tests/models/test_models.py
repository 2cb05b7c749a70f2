"""Model resolution: the embedded default offline, local folders, and Hub ids that can't be fetched."""

import pytest

from tuning.config import LoraConfig, ModelConfig
from tuning.models.loading import (
    EMBEDDED_MODEL,
    ModelLoadError,
    bnb_config,
    default_model_name,
    load_base_model,
    load_tokenizer,
    lora_config,
    resolve_model,
)


def test_embedded_model_is_a_cached_safetensors_folder():
    model = resolve_model("embedded")
    assert model.name == EMBEDDED_MODEL
    assert (model.path / "config.json").is_file()
    assert list(model.path.glob("*.safetensors"))
    assert "quantization_config" not in (model.path / "config.json").read_text()


def test_auto_is_the_embedded_model_without_a_gpu():
    # This machine and CI have no GPU and the Hub is offline.
    assert default_model_name() == EMBEDDED_MODEL
    assert resolve_model("auto").name == EMBEDDED_MODEL


def test_local_folder_resolves_to_itself():
    folder = resolve_model("embedded").path
    assert resolve_model(str(folder)).path == folder


def test_folder_without_config_says_what_is_missing(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_local_path_is_reported(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        resolve_model(str(tmp_path / "nowhere"))


def test_hub_id_offline_says_what_to_do():
    with pytest.raises(ModelLoadError) as error:
        resolve_model("TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message and "hf download" in message and "embedded" in message


def test_malformed_hub_id_is_reported():
    with pytest.raises(ModelLoadError, match="neither a local folder nor a valid Hub id"):
        resolve_model("not a//valid id")


def test_qlora_settings_are_nf4_double_quant():
    config = bnb_config(ModelConfig(load_in_4bit=True, double_quant=True))
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert bnb_config(ModelConfig(load_in_4bit=False)) is None


def test_lora_settings_come_from_the_recipe():
    config = lora_config(LoraConfig(r=4, alpha=8, dropout=0.1, target_modules=["q_proj"]))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj"}


def test_four_bit_load_is_smaller_than_full_precision():
    import bitsandbytes as bnb

    path = resolve_model("embedded").path
    quantized = load_base_model(path, ModelConfig(load_in_4bit=True))
    full = load_base_model(path, ModelConfig(load_in_4bit=False))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules())
    assert quantized.get_memory_footprint() < 0.5 * full.get_memory_footprint()
    assert load_tokenizer(path).pad_token is not None
