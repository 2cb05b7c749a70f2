"""The label-only loss equals the model's own loss and gives the same LoRA gradients."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from tuning.data.chat_template import IGNORE_INDEX
from tuning.training import loss as label_loss
from tuning.training.loss import LabelOnlyLossTrainer, causal_lm_of, label_only_loss, supports_label_only_loss
from tuning.training.train import PadToLongest


def tiny_lora_model(**config):
    """A small random Llama (tied embeddings, like SmolLM2) with a LoRA adapter on every linear layer."""
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                        **config))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a non-zero effect on the loss
            torch.nn.init.normal_(param, std=0.1)
    return model


def tiny_batch():
    """Two right-padded conversations of different lengths; labels only on their 'answers'."""
    features = [{"input_ids": [5, 6, 7, 8, 9, 10, 11], "labels": [IGNORE_INDEX] * 4 + [9, 10, 11]},
                {"input_ids": [12, 13, 14, 15, 16], "labels": [IGNORE_INDEX] * 3 + [15, 16]}]
    return PadToLongest(pad_id=0)(features)


def loss_and_lora_grads(model, compute):
    model.zero_grad()
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("num_items_in_batch", [None, torch.tensor(9)])
def test_label_only_loss_equals_the_models_own_loss_and_gradients(num_items_in_batch):
    model, batch = tiny_lora_model(), tiny_batch()
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    expected, expected_grads = loss_and_lora_grads(model, lambda: model(**batch, **extra).loss)
    loss, grads = loss_and_lora_grads(model, lambda: label_only_loss(causal_lm_of(model), batch, num_items_in_batch))
    assert torch.allclose(loss, expected, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], atol=1e-5, rtol=1e-4), name


def test_trainer_uses_it_for_training_and_keeps_the_usual_path_for_logits(tmp_path, monkeypatch):
    model, batch = tiny_lora_model(), tiny_batch()
    calls = []
    monkeypatch.setattr(label_loss, "label_only_loss", lambda *args: calls.append(args) or label_only_loss(*args))
    trainer = LabelOnlyLossTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                       report_to="none"))
    with torch.no_grad():
        expected = model(**batch).loss
        assert torch.allclose(trainer.compute_loss(model, dict(batch)), expected, atol=1e-5)
        assert len(calls) == 1
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    assert len(calls) == 1 and torch.allclose(loss, expected, atol=1e-5)
    assert outputs.logits.shape[:2] == batch["input_ids"].shape  # evaluation still gets every position's logits


def test_models_that_rescale_their_logits_keep_their_own_loss():
    assert supports_label_only_loss(causal_lm_of(tiny_lora_model()))
    softcapped = tiny_lora_model()
    softcapped.config.final_logit_softcapping = 30.0  # Gemma 2 style: the shortcut would skip the cap
    assert not supports_label_only_loss(causal_lm_of(softcapped))


def test_under_mixed_precision_it_runs_in_the_trainers_autocast_like_the_wrapped_forward(tmp_path):
    """accelerate wraps the model's forward in torch.autocast for bf16/fp16; the shortcut calls the base model
    around that wrapper, so it must enter the same autocast or train at another precision than it evaluates."""
    model, batch = tiny_lora_model(), tiny_batch()
    trainer = LabelOnlyLossTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                       bf16=True, report_to="none"))
    seen = []

    def record(module, args, output):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), output.dtype))

    lm_head = causal_lm_of(model).get_output_embeddings()
    lora_a = next(m for name, m in model.named_modules() if name.endswith("q_proj.lora_A.default"))
    with torch.no_grad():
        full_precision = model(**batch).loss
        hooks = [lm_head.register_forward_hook(record), lora_a.register_forward_hook(record)]
        loss = trainer.compute_loss(model, dict(batch))
        assert seen and all(entry == (True, torch.bfloat16, torch.bfloat16) for entry in seen), seen
        for hook in hooks:
            hook.remove()
        wrapped = trainer.accelerator.prepare_model(model)  # what Trainer.train does: forward under autocast
        expected = wrapped(**batch).loss
    assert abs(full_precision - expected) > 1e-4, "the model must be big enough for bf16 to change its loss"
    assert torch.allclose(loss, expected, atol=2e-5, rtol=0), (loss, expected, full_precision)
