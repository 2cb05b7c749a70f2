"""Training loss that runs the lm_head only where a token is trained (the assistant's answers).

The standard causal-LM forward projects every position onto the whole vocabulary and the loss
then ignores the prompt's positions. On SmolLM2-135M the tied lm_head (49k x 576) is ~20% of the
model's FLOPs and about two thirds of a Kalevala conversation is prompt (system turn + question),
so gathering the positions whose next token is a label first gives the same loss and gradients
for a third of the head's matmuls and of the fp32 softmax over 49k logits.
"""

from __future__ import annotations

from transformers import Trainer

from tuning.data.chat_template import IGNORE_INDEX

# Config fields of models whose logits are rescaled or capped after the lm_head (Gemma 2's softcapping,
# Cohere's logit_scale, Granite's logits_scaling...): the shortcut would skip that step, so they keep
# the model's own loss. TRL's fused lm_head reads the same list.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling")


def causal_lm_of(model):
    """The transformers *ForCausalLM under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_label_only_loss(causal_lm) -> bool:
    """True when the logits are just lm_head(hidden states), so projecting a subset of positions is exact."""
    config = causal_lm.config.get_text_config()
    plain_logits = all(getattr(config, name, None) is None for name in LOGIT_TRANSFORMS)
    return plain_logits and causal_lm.get_output_embeddings() is not None


def label_only_loss(causal_lm, inputs: dict, num_items_in_batch=None):
    """Mean next-token cross-entropy over the label tokens, with the lm_head applied only at their positions.

    Equal to the model's own loss (transformers' ForCausalLMLoss): labels shift left by one, fp32
    logits, summed and divided by num_items_in_batch when the Trainer gives it (the label tokens of
    the whole accumulated step), else averaged over this batch's label tokens.
    """
    import torch.nn.functional as F  # noqa: N812 -- torch's own convention

    features = {key: value for key, value in inputs.items() if key != "labels"}
    hidden = causal_lm.base_model(**features, use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][trained])
    loss = F.cross_entropy(logits.float(), targets[trained], reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else trained.sum())


class LabelOnlyLossTrainer(Trainer):
    """The transformers Trainer, with the training loss computed by label_only_loss where that is exact."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """label_only_loss for a training step of a plain causal LM; the Trainer's own loss otherwise."""
        unwrapped = self.accelerator.unwrap_model(model)
        # Evaluation may want logits, and a DDP/FSDP wrapper must see the forward: both keep the usual path.
        if return_outputs or unwrapped is not model or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        causal_lm = causal_lm_of(model)
        if not supports_label_only_loss(causal_lm):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The shortcut calls the base model, not the forward accelerate wrapped in torch.autocast for
        # bf16/fp16: enter the same autocast here, or attention, LoRA and lm_head would run in fp32 and the
        # training loss would be taken at another precision than the evaluation loss.
        with self.accelerator.autocast():
            return label_only_loss(causal_lm, inputs, num_items_in_batch)
