"""The recipe levers for a faster CPU example: LoRA on the top layers only (backward stops there), and a
warmup-stable-decay schedule whose decay length transformers needs in steps."""

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from tuning.config import LoraConfig, TrainingConfig
from tuning.models.loading import lora_config
from tuning.training.estimate import lora_trainable_params
from tuning.training.train import decay_steps


@pytest.fixture(scope="module")
def tiny_llama():
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(config)


def test_top_layers_puts_lora_on_the_top_layers_only(tiny_llama):
    from peft import get_peft_model

    settings = lora_config(LoraConfig(r=2, alpha=2, target_modules="all-linear", top_layers=2), tiny_llama)
    assert settings.layers_to_transform == [2, 3]
    assert set(settings.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"}  # 'all-linear' spelled out: PEFT needs names here
    model = get_peft_model(tiny_llama, settings)
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in model.named_parameters() if "lora_A" in name}
    assert adapted == {"2", "3"}
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == lora_trainable_params(tiny_llama.config, 2, "all-linear", top_layers=2)
    assert trainable * 2 == lora_trainable_params(tiny_llama.config, 2, "all-linear")


def test_zero_or_too_many_top_layers_means_every_layer(tiny_llama):
    for top in (0, 4, 9):
        assert lora_config(LoraConfig(top_layers=top), tiny_llama).layers_to_transform is None
    with pytest.raises(ValueError, match="lora.top_layers is -1"):
        lora_config(LoraConfig(top_layers=-1), tiny_llama)


def test_the_decay_is_its_share_of_the_runs_steps():
    # The Kalevala CPU recipe: 537 pairs, batch 8 -> 68 steps an epoch, x 6 = 408; a fifth of them decay.
    assert decay_steps(TrainingConfig(epochs=6, batch_size=8, decay_ratio=0.2), 537) == 82
    assert decay_steps(TrainingConfig(max_steps=100, decay_ratio=0.3), 537) == 30
    assert decay_steps(TrainingConfig(epochs=1, batch_size=8, grad_accum=2, decay_ratio=0.5), 64, processes=2) == 1
