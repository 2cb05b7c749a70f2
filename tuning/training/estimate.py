"""Pre-flight estimate: trainable parameters, memory and time, before a run starts, on the device it will run on.

Time is the whole wait: the model's download (when it isn't cached yet) and load, the training -- at the
throughput earlier runs of the same model measured on this machine (their metrics.jsonl), or with none
yet the figure measured when the recipe was written -- and the scorecard after it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from tuning.config import DPO, RecipeConfig, load_recipe
from tuning.hardware.cpu_precision import ModelShapes
from tuning.hardware.device import DTYPE_BYTES, Device, compute_dtype, cpu_measurement
from tuning.runs.files import CONFIG_FILE, ENVIRONMENT_FILE, read_json, read_metrics

# Measured on the 2-core development CPU (embedded model, 4-bit, batch 8): see configs/kalevala.yaml.
FALLBACK_TOKENS_PER_S_CPU = 200.0
FALLBACK_TOKENS_PER_S_GPU = 3000.0
ADAM_BYTES_PER_TRAINABLE = 4 + 4 + 8  # fp32 weight, gradient, and Adam's two moments
ACTIVATION_BYTES_PER_TOKEN_PER_LAYER = 34  # x hidden size: attention + MLP activations kept for backward (fp32)
# NF4 packs two weights a byte; each block of 64 has an absmax constant: fp32 (4 B), or with double
# quantization 8 bits plus one fp32 constant per 256 blocks.
NF4_BYTES_PER_WEIGHT = {False: 0.5 + 4 / 64, True: 0.5 + 1 / 64 + 4 / (64 * 256)}
# peft's prepare_model_for_kbit_training casts everything 4-bit leaves alone -- embeddings, lm_head,
# norms -- to fp32 for a stable backward: in a QLoRA run they take 4 bytes a weight, whatever the compute dtype.
KBIT_UNQUANTIZED_BYTES = 4
# Every process that touches a GPU holds a CUDA context before its first tensor: driver state and the loaded
# kernels of torch, cuBLAS and bitsandbytes. nvidia-smi shows 0.3-0.5 GB per process, depending on the GPU and
# driver; torch.cuda.memory_allocated() never counts it, so an estimate built from tensors alone falls short.
CUDA_CONTEXT_BYTES = 0.4e9
# Assumed, not measured here (no network): Hub downloads reach a Space at tens to hundreds of MB/s, a home
# line often less; 50 MB/s keeps the wait on the safe side.
ASSUMED_DOWNLOAD_BYTES_PER_S = 50e6
# Assumed: a fresh training process imports torch/transformers/peft and reads its data (~15 s), then reads the
# weights from disk and (QLoRA) quantizes them at ~200 MB/s. The scorecard loads the base model once more.
PROCESS_START_S = 15.0
ASSUMED_LOAD_BYTES_PER_S = 200e6
SCORECARD_BATCH = 8  # questions per generate batch (SideBySideChat.answer_many); each batch runs to its longest answer
# Decode steps per second of one such batch. CPU: the README's Kalevala scorecard (58 questions, base and tuned,
# 16 batches of 128 tokens) took ~2 min with SmolLM2-135M: ~17 steps/s; CPU decoding is bound by the weights it
# reads, so the rate scales down with the model's size. GPU: assumed; generate() on a ~1B model is bound by the
# kernel launches of each step (~40-60 ms on a T4), not by the model's size.
SCORECARD_STEPS_PER_S_CPU_135M = 15.0
CPU_REFERENCE_PARAMS = 135e6
SCORECARD_STEPS_PER_S_GPU = 20.0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


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
    seconds: float  # training alone (what caps on a run's minutes check)
    steps: int
    device_label: str = "CPU (fp32)"  # "Tesla T4 (fp16)": where the run computes, and in what
    precision_note: str = ""  # on a CPU, why that precision: "CPU bf16: 4.4x fp32 here, so bf16"
    device_memory_gb: float | None = None  # what the device has
    cuda_context_gb: float = 0.0  # part of training_memory_gb
    download_s: float = 0.0  # 0 when the model is already cached
    load_s: float = 0.0
    scorecard_s: float = 0.0
    scorecard_questions: int = 0
    probes: tuple[str, ...] = ()  # the scorecard's probes, whose questions scorecard_s includes

    @property
    def total_seconds(self) -> float:
        """From Start to the scorecard: download, load, training, scorecard."""
        return self.download_s + self.load_s + self.seconds + self.scorecard_s

    def headline(self) -> str:
        """'Tesla T4 (fp16): ~2.6 GB, ~4 min'."""
        return f"{self.device_label}: ~{self.training_memory_gb:.1f} GB, ~{_duration(self.total_seconds)}"

    def summary(self) -> str:
        """The Train tab's estimate: the headline, then the parts it adds up."""
        over = ""
        if self.device_memory_gb and self.training_memory_gb > self.device_memory_gb:
            over = (f" **More than the {self.device_memory_gb:.0f} GB this device has**: lower the batch size or "
                    "max length, or turn on 4-bit.")
        context = f", ~{self.cuda_context_gb:.1f} GB of it the CUDA context" if self.cuda_context_gb else ""
        download = f"download ~{_duration(self.download_s)} (not cached yet), " if self.download_s else ""
        probes = f"; probes: {', '.join(self.probes)}" if self.probes else ""
        scorecard = (f", scorecard ~{_duration(self.scorecard_s)} ({self.scorecard_questions} held-out questions, "
                     f"base and tuned{probes})" if self.scorecard_s else "")
        precision = f" {self.precision_note}." if self.precision_note else ""
        return (f"**{self.headline()}**\n\n"
                f"{self.trainable_params:,} trainable parameters of {self.total_params:,} "
                f"({100 * self.trainable_params / max(self.total_params, 1):.2f}%). "
                f"Memory: ~{self.weights_gb:.2f} GB of weights, ~{self.training_memory_gb:.1f} GB while training"
                f"{context}.{over}{precision} "
                f"{self.steps} optimizer steps over {self.total_tokens:,} tokens; at {self.tokens_per_s:.0f} tokens/s "
                f"({self.tokens_per_s_source}) about {_duration(self.seconds)}. "
                f"Time: {download}load ~{_duration(self.load_s)}, training ~{_duration(self.seconds)}{scorecard}.")


def lora_trainable_params(config, lora_r: int, target_modules, top_layers: int = 0) -> int:
    """LoRA parameters of a Llama-style model: r x (in + out) for each targeted linear layer (of the top_layers
    when given)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (hidden, hidden),
              "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
    names = shapes if target_modules == "all-linear" else [n for n in target_modules if n in shapes]
    layers = min(top_layers, config.num_hidden_layers) if top_layers else config.num_hidden_layers
    return layers * sum(lora_r * sum(shapes[n]) for n in names)


def block_linear_params(config) -> int:
    """Weights of the linear layers inside the transformer blocks: the only ones 4-bit quantizes."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    return layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter)


def total_params(config) -> int:
    """Parameter count of a Llama-style model from its config."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    norms = layers * 2 * hidden + hidden
    embeddings = config.vocab_size * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return block_linear_params(config) + norms + embeddings


def checkpoint_bytes(config) -> float:
    """Size of the model's weights on the Hub / on disk, in the dtype its config says it ships in."""
    stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return total_params(config) * DTYPE_BYTES.get(stored.removeprefix("torch."), 4)


def scorecard_steps_per_s(device: Device, params: int) -> float:
    """Decode steps per second of a scorecard batch on this device."""
    if device.is_gpu:
        return SCORECARD_STEPS_PER_S_GPU
    return SCORECARD_STEPS_PER_S_CPU_135M * CPU_REFERENCE_PARAMS / max(params, 1)


def measured_tokens_per_s(runs_dir: Path, model_name: str, dtype: str | None = None) -> tuple[list[float], int]:
    """Median tokens/s of each earlier run of this model (skipping their warm-up first lines), of those that
    computed in `dtype` when given: a CPU's bf16 and fp32 runs of one model differ by half again."""
    rates, runs = [], 0
    if not runs_dir.is_dir():
        return rates, runs
    for config_path in runs_dir.glob(f"*/{CONFIG_FILE}"):
        try:
            if load_recipe(config_path).model.name != model_name:
                continue
        except ValueError:
            continue
        recorded = (read_json(config_path.parent / ENVIRONMENT_FILE, {}) or {}).get("device") or {}
        if dtype and recorded.get("dtype", dtype) != dtype:  # runs from before the record say nothing: kept
            continue
        values = [m["tokens_per_s"] for m in read_metrics(config_path.parent)[1:] if m.get("tokens_per_s")]
        if values:
            rates.append(statistics.median(values))
            runs += 1
    return rates, runs


def estimate_run(recipe: RecipeConfig, model_config, conversation_tokens: list[int], device: Device,
                 runs_dir: Path | None = None, scorecard_questions: int = 0, answer_tokens: int = 0,
                 cached: bool = True, sequences_per_row: int = 1) -> Estimate:
    """Estimate parameters, memory and time of a recipe over conversations of the given token lengths, on device.

    A row is what one optimizer step counts batch_size of: a conversation, or (DPO) a preference pair, whose length
    is then the tokens of all its sequences_per_row sequences (each already cut to max_length).
    scorecard_questions x answer_tokens: what the scorecard will generate (twice: base and tuned), plus its
    probes' questions (recipe.training.probes); cached=False adds the model's download."""
    total = total_params(model_config)
    trainable = lora_trainable_params(model_config, recipe.lora.r, recipe.lora.target_modules, recipe.lora.top_layers)
    fields = model_config.to_dict() if hasattr(model_config, "to_dict") else vars(model_config)
    shapes = ModelShapes.from_config(fields)
    dtype = compute_dtype(recipe.model, device, shapes)
    dtype_bytes = DTYPE_BYTES[dtype]
    linear = block_linear_params(model_config)
    if recipe.model.load_in_4bit:  # NF4 linear layers; embeddings, lm_head and norms stay, upcast to fp32
        weights = linear * NF4_BYTES_PER_WEIGHT[recipe.model.double_quant] + (total - linear) * KBIT_UNQUANTIZED_BYTES
    else:
        weights = total * dtype_bytes
    lengths = [min(n, recipe.data.max_length * sequences_per_row) for n in conversation_tokens] or [0]
    longest_batch = sorted(lengths)[-recipe.training.batch_size:]
    activations = (sum(longest_batch) * model_config.num_hidden_layers * model_config.hidden_size
                   * ACTIVATION_BYTES_PER_TOKEN_PER_LAYER)
    logits = sum(longest_batch) * model_config.vocab_size * 4 * 3  # fp32 logits, their softmax and gradient
    context = CUDA_CONTEXT_BYTES if device.is_gpu else 0.0
    memory = weights + trainable * ADAM_BYTES_PER_TRAINABLE + activations + logits + context

    t = recipe.training
    per_step = t.batch_size * t.grad_accum
    steps_per_epoch = max(1, -(-len(lengths) // per_step))
    # As the Trainer counts them (ceil of epochs x steps per epoch): the steps a cap on them must see.
    steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    tokens_per_epoch = sum(lengths)
    total_tokens = int(tokens_per_epoch * steps / steps_per_epoch)
    rates, runs = measured_tokens_per_s(runs_dir, recipe.model.name, dtype) if runs_dir else ([], 0)
    if rates:
        rate, source = statistics.median(rates), f"measured on {runs} earlier run{'s' if runs > 1 else ''}"
    else:
        rate = FALLBACK_TOKENS_PER_S_GPU if device.is_gpu else FALLBACK_TOKENS_PER_S_CPU
        source = "recipe default"

    size = checkpoint_bytes(model_config)
    load = size / ASSUMED_LOAD_BYTES_PER_S
    scorecard = 0.0
    if scorecard_questions and t.scorecard:
        from tuning.chat.probes.run_probes import probe_batches

        passes = [(scorecard_questions, answer_tokens)] * 2  # base, then tuned
        passes += probe_batches(tuple(t.probes), scorecard_questions, t.scorecard_questions, answer_tokens)
        steps_needed = sum(math.ceil(rows / SCORECARD_BATCH) * tokens for rows, tokens in passes)
        scorecard = load + steps_needed / scorecard_steps_per_s(device, total)
    return Estimate(trainable_params=trainable, total_params=total, weights_gb=weights / 1e9,
                    training_memory_gb=memory / 1e9, tokens_per_epoch=tokens_per_epoch, total_tokens=total_tokens,
                    tokens_per_s=rate, tokens_per_s_source=source, seconds=total_tokens / rate, steps=steps,
                    device_label=device.label(dtype),
                    precision_note=device.precision_note(dtype, cpu_measurement(recipe.model, device, shapes)),
                    device_memory_gb=device.total_memory_gb if device.is_gpu else None,
                    cuda_context_gb=context / 1e9,
                    download_s=0.0 if cached else size / ASSUMED_DOWNLOAD_BYTES_PER_S,
                    load_s=PROCESS_START_S + load, scorecard_s=scorecard,
                    scorecard_questions=scorecard_questions if scorecard else 0,
                    probes=tuple(t.probes) if scorecard else ())


def is_cached(name: str, revision: str | None = None) -> bool:
    """True when the model's weights are on this machine already (no download before the run)."""
    import importlib.util

    from tuning.config import AUTO_MODEL, EMBEDDED_MODEL
    from tuning.models.loading import EMBEDDED_HUB_ID, EMBEDDED_PACKAGE, default_model_name

    if name == AUTO_MODEL:
        name = default_model_name()
    if name == EMBEDDED_MODEL:
        if importlib.util.find_spec(EMBEDDED_PACKAGE) is not None:
            return True
        name = EMBEDDED_HUB_ID
    if Path(name).expanduser().is_dir():
        return True
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 -- not cached, not a Hub id: either way nothing cached to count on
        return False
    return any(folder.glob("*.safetensors"))


def estimate_recipe(recipe: RecipeConfig, runs_dir: Path | None = None, device: Device | None = None) -> Estimate:
    """Estimate a recipe's cost on this device (or `device`) from its model's config and its data's token counts.

    The rows are those training will take (train.py prepare_data, dpo.py prepare_preferences): a run continuing a
    parent (UsageError naming the fix when it may not) trains the parent's LoRA shape, adds training.replay of its
    rows (SFT) and, without data.validation, is scored on the parent's held-out rows; DPO counts preference pairs."""
    from transformers import AutoConfig

    from tuning.chat.scorecard import answer_budget
    from tuning.data.chat_template import encode_for_training, with_system_prompt
    from tuning.data.examples import load_examples, reference_answers, split_examples, user_prompts
    from tuning.hardware.device import read_device
    from tuning.models.loading import load_tokenizer, resolve_model
    from tuning.training.parent import check_parent, parent_validation_rows, replay_rows

    parent = check_parent(recipe)  # loads no model: the run folder's files only
    if parent is not None:  # the child trains the parent's adapter, so its shape is the parent's (inherit_from_parent)
        recipe = dataclasses.replace(recipe, lora=parent.run.recipe().lora)
    cached = is_cached(recipe.model.name, recipe.model.revision)  # before resolving: that fetches it
    model = resolve_model(recipe.model.name, recipe.model.revision)
    tokenizer = load_tokenizer(model.path)
    t, max_length = recipe.training, recipe.data.max_length
    examples = None
    if recipe.data.validation:
        held_out = load_examples(recipe.data.validation).examples
    elif parent is not None:  # as training scores a child: on its parent's held-out questions, not a split of its own
        held_out = parent_validation_rows(parent)
    else:
        examples, held_out = split_examples(load_examples(recipe.data.train).examples, recipe.data.validation_fraction,
                                            t.seed)
    sequences_per_row = 1
    if t.method == DPO:
        from tuning.data.preferences import load_preferences
        from tuning.training.dpo import encode_preferences

        # A DPO step runs each pair's chosen and rejected answers, each after the prompt, forward and back through
        # the policy: two sequences, so a pair costs the tokens of both (each cut to max_length, as DPOConfig's
        # max_length cuts them). Passed as one row of that length, the steps stay pairs / (batch x grad_accum) x
        # epochs, the tokens and seconds count both sequences, and the memory's longest batch holds 2 x batch
        # sequences, as a DPO batch does. The reference's log-probs (one forward pass before step 1) aren't counted.
        pairs = encode_preferences(load_preferences(recipe.data.train).rows, tokenizer, recipe)  # as training drops
        lengths = [sum(min(len(pair["prompt_ids"]) + len(pair[f"{side}_ids"]), max_length)
                       for side in ("chosen", "rejected")) for pair in pairs]
        sequences_per_row = 2
    else:
        if examples is None:  # data.validation given, or a child: every row of data.train trains
            examples = load_examples(recipe.data.train).examples
        if parent is not None:  # an SFT top-up mixes in training.replay of the parent's rows
            examples = examples + replay_rows(parent, t.replay, t.seed, user_prompts(examples))
        lengths = [len(encode_for_training(tokenizer, with_system_prompt(e["messages"], recipe.data.system_prompt),
                                           max_length).input_ids) for e in examples]
    limit = t.scorecard_questions
    questions = min(limit, len(held_out)) if limit > 0 else len(held_out)
    answer_tokens = answer_budget(tokenizer, reference_answers(held_out)) if questions else 0
    return estimate_run(recipe, AutoConfig.from_pretrained(model.path), lengths, device or read_device(), runs_dir,
                        scorecard_questions=questions, answer_tokens=answer_tokens, cached=cached,
                        sequences_per_row=sequences_per_row)


def estimate_seconds_for_run(run_dir: Path) -> float | None:
    """Expected seconds a queued run will take, from its load to its scorecard (None when it can't be estimated)."""
    from tuning.runs.files import REQUEST_FILE

    try:
        return estimate_recipe(load_recipe(run_dir / REQUEST_FILE), run_dir.parent).total_seconds
    except Exception:  # noqa: BLE001 -- an estimate is a nicety: a queue position without it is still right
        return None
