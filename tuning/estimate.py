"""Pre-flight estimate: trainable parameters, memory and time, before a run starts.

Time comes from throughput measured by earlier runs of the same model on this machine
(their metrics.jsonl); with none yet, from the figure measured when the recipe was written.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from tuning.config import RecipeConfig, load_recipe
from tuning.run_files import CONFIG_FILE, read_metrics

# Measured on the 2-core development CPU (embedded model, 4-bit, batch 8): see configs/kalevala.yaml.
FALLBACK_TOKENS_PER_S_CPU = 200.0
FALLBACK_TOKENS_PER_S_GPU = 3000.0
ADAM_BYTES_PER_TRAINABLE = 4 + 4 + 8  # fp32 weight, gradient, and Adam's two moments
ACTIVATION_BYTES_PER_TOKEN_PER_LAYER = 34  # x hidden size: attention + MLP activations kept for backward (fp32)


@dataclass
class Estimate:
    """What a run will cost, in the units people decide with."""

    trainable_params: int
    total_params: int
    weights_gb: float
    training_memory_gb: float
    tokens_per_epoch: int
    total_tokens: int
    tokens_per_s: float
    tokens_per_s_source: str  # "measured on N earlier runs" or "recipe default"
    seconds: float
    steps: int

    def summary(self) -> str:
        """One paragraph for the Train tab."""
        duration = f"{self.seconds:.0f} s" if self.seconds < 90 else f"{self.seconds / 60:.0f} min"
        return (f"{self.trainable_params:,} trainable parameters of {self.total_params:,} "
                f"({100 * self.trainable_params / max(self.total_params, 1):.2f}%). "
                f"Memory: ~{self.weights_gb:.2f} GB of weights, ~{self.training_memory_gb:.1f} GB while training. "
                f"{self.steps} optimizer steps over {self.total_tokens:,} tokens; at {self.tokens_per_s:.0f} tokens/s "
                f"({self.tokens_per_s_source}) about {duration}.")


def lora_trainable_params(config, lora_r: int, target_modules) -> int:
    """LoRA parameters of a Llama-style model: r x (in + out) for each targeted linear layer."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden),
              "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
    names = shapes if target_modules == "all-linear" else [n for n in target_modules if n in shapes]
    return config.num_hidden_layers * sum(lora_r * sum(shapes[n]) for n in names)


def total_params(config) -> int:
    """Parameter count of a Llama-style model from its config."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
    embeddings = config.vocab_size * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return layers * per_layer + embeddings + hidden


def measured_tokens_per_s(runs_dir: Path, model_name: str) -> tuple[list[float], int]:
    """Median tokens/s of each earlier run of this model (skipping their warm-up first lines)."""
    rates, runs = [], 0
    if not runs_dir.is_dir():
        return rates, runs
    for config_path in runs_dir.glob(f"*/{CONFIG_FILE}"):
        try:
            if load_recipe(config_path).model.name != model_name:
                continue
        except ValueError:
            continue
        values = [m["tokens_per_s"] for m in read_metrics(config_path.parent)[1:] if m.get("tokens_per_s")]
        if values:
            rates.append(statistics.median(values))
            runs += 1
    return rates, runs


def estimate_run(recipe: RecipeConfig, model_config, conversation_tokens: list[int], on_gpu: bool,
                 runs_dir: Path | None = None) -> Estimate:
    """Estimate parameters, memory and time of a recipe over conversations of the given token lengths."""
    total = total_params(model_config)
    trainable = lora_trainable_params(model_config, recipe.lora.r, recipe.lora.target_modules)
    embedding = model_config.vocab_size * model_config.hidden_size
    bytes_per_weight = 0.5 if recipe.model.load_in_4bit else 4.0  # NF4 vs fp32 (on a GPU bf16 halves it)
    weights = (total - embedding) * bytes_per_weight + embedding * 4.0
    lengths = [min(n, recipe.data.max_length) for n in conversation_tokens] or [0]
    longest_batch = sorted(lengths)[-recipe.training.batch_size:]
    activations = (sum(longest_batch) * model_config.num_hidden_layers * model_config.hidden_size
                   * ACTIVATION_BYTES_PER_TOKEN_PER_LAYER)
    logits = sum(longest_batch) * model_config.vocab_size * 4 * 3  # fp32 logits, their softmax and gradient
    memory = weights + trainable * ADAM_BYTES_PER_TRAINABLE + activations + logits

    t = recipe.training
    per_step = t.batch_size * t.grad_accum
    steps_per_epoch = max(1, -(-len(lengths) // per_step))
    # As the Trainer counts them (ceil of epochs x steps per epoch): the steps a cap on them must see.
    steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    tokens_per_epoch = sum(lengths)
    total_tokens = int(tokens_per_epoch * steps / steps_per_epoch)
    rates, runs = measured_tokens_per_s(runs_dir, recipe.model.name) if runs_dir else ([], 0)
    if rates:
        rate, source = statistics.median(rates), f"measured on {runs} earlier run{'s' if runs > 1 else ''}"
    else:
        rate = FALLBACK_TOKENS_PER_S_GPU if on_gpu else FALLBACK_TOKENS_PER_S_CPU
        source = "recipe default"
    return Estimate(trainable_params=trainable, total_params=total, weights_gb=weights / 1e9,
                    training_memory_gb=memory / 1e9, tokens_per_epoch=tokens_per_epoch, total_tokens=total_tokens,
                    tokens_per_s=rate, tokens_per_s_source=source, seconds=total_tokens / rate, steps=steps)


def estimate_recipe(recipe: RecipeConfig, runs_dir: Path | None = None) -> Estimate:
    """Estimate a recipe's cost from its model's config and its data's real token counts."""
    from transformers import AutoConfig

    from tuning.data import load_examples
    from tuning.formatting import encode_for_training, with_system_prompt
    from tuning.models import has_gpu, load_tokenizer, resolve_model

    model = resolve_model(recipe.model.name, recipe.model.revision)
    tokenizer = load_tokenizer(model.path)
    examples = load_examples(recipe.data.train).examples
    if not recipe.data.validation:
        examples = examples[: max(1, int(len(examples) * (1 - recipe.data.validation_fraction)))]
    lengths = [len(encode_for_training(tokenizer, with_system_prompt(e["messages"], recipe.data.system_prompt),
                                       recipe.data.max_length).input_ids) for e in examples]
    return estimate_run(recipe, AutoConfig.from_pretrained(model.path), lengths, has_gpu(), runs_dir)


def estimate_seconds_for_run(run_dir: Path) -> float | None:
    """Expected training seconds of a queued run (None when it can't be estimated)."""
    from tuning.runs import REQUEST_FILE

    try:
        return estimate_recipe(load_recipe(run_dir / REQUEST_FILE), run_dir.parent).seconds
    except Exception:  # an estimate is a nicety: a queue position without it is still right
        return None
