"""Training throughput: `tuning train`'s loop vs TRL SFTTrainer's defaults vs a minimal PyTorch loop.

Targets (issue): (a) tuning train >= 2.0x (b) TRL SFTTrainer with its default settings, and >= 0.9x
(c) a hand-written loop over pre-tokenized, length-sorted batches (a practical ceiling). All three get
the recipe's model (4-bit NF4 on the CPU), LoRA settings, batch size, max length and data (Kalevala
train, with the recipe's system prompt), and are timed over the same number of optimizer steps after
a few untimed warm-up steps. Each runs in its own process, one after the other, with the same torch
thread count. tokens/s = non-padding input tokens of the timed steps / their wall seconds (from the
end of the last warm-up step to the end of the last timed step: batching, logging and checkpoint
saves between steps count). (a) is the recipe with max_steps = warmup + steps and no per-epoch
evaluation or scorecard (the others do neither). Each variant computes in the precision `compute_dtype:
auto` chooses on this machine (bf16 where the CPU measured it faster, tuning/hardware/cpu_precision.py), and says
which: its base weights' compute dtype, its LoRA weights' dtype and whether it autocasts. MFU is taken
against the best peak this machine has, fp32 or bf16, both measured and printed. Prints the CPU's name
and the ratios last. Run it on a quiet machine: a busy neighbour on a 2-core CPU stalls every
multi-threaded step and swings a variant's figure 5x.

    HF_HUB_OFFLINE=1 python bench/train_throughput.py [--steps 30] [--warmup 3] [--variants a,b,c]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuning.config import load_recipe
from tuning.data.chat_template import IGNORE_INDEX, encode_for_training, with_system_prompt
from tuning.data.examples import load_examples

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "kalevala.yaml"
NAMES = {"a": "(a) tuning train", "b": "(b) TRL SFTTrainer, defaults", "c": "(c) hand-written loop"}
# The SFTConfig fields whose TRL defaults decide its speed; read from the instance and printed.
TRL_DEFAULTS_SHOWN = ("gradient_checkpointing", "bf16", "padding_free", "packing", "assistant_only_loss",
                      "completion_only_loss", "loss_type", "learning_rate", "logging_steps", "optim",
                      "train_sampling_strategy", "dataloader_num_workers", "use_liger_kernel")
PEAK_MATMUL_SIZE = 2048  # square matmul: big enough to run at the CPU's GEMM peak, ~0.1-0.3 s on 2 cores
PEAK_REPEATS = 5
RESULT_PREFIX = "RESULT "  # the child's one JSON line on stdout; everything else is noise to ignore


class CountingCollator:
    """Wraps a collator to record each batch's non-padding and padded token counts, in training order."""

    def __init__(self, collate) -> None:
        self.collate = collate
        self.real: list[int] = []
        self.padded: list[int] = []

    def __call__(self, features):
        batch = self.collate(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.real.append(int(mask.sum()) if mask is not None else ids.numel())  # padding-free: no mask, no pad
        self.padded.append(ids.numel())
        return batch


def step_window(marks: list[float], counter: CountingCollator, warmup: int, steps: int) -> dict:
    """Tokens and seconds of the timed steps, from per-step end times and per-batch token counts."""
    if len(marks) < warmup + steps:
        raise RuntimeError(f"only {len(marks)} steps ran, {warmup + steps} needed -- is the data that small?")
    seconds = marks[warmup + steps - 1] - marks[warmup - 1]
    real = sum(counter.real[warmup : warmup + steps])
    padded = sum(counter.padded[warmup : warmup + steps])
    return {"tokens": real, "padded_tokens": padded, "seconds": seconds, "tokens_per_s": real / seconds}


def step_timer():
    """A TrainerCallback that notes the wall time at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    return StepTimer()


def compute_path_params(model) -> int:
    """Weights every token multiplies through: all nn.Linear layers at full shape (4-bit ones too), LoRA A/B
    and the lm_head (tied to the embeddings); the embedding lookup is a gather and isn't counted."""
    import torch

    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def train_rows(recipe) -> list[list[dict]]:
    """The recipe's training conversations, with its system prompt, as message lists."""
    rows = load_examples(recipe.data.train).examples
    return [with_system_prompt(row["messages"], recipe.data.system_prompt) for row in rows]


def run_tuning_train(recipe, model_ref, tokenizer, scratch: Path, warmup: int, steps: int) -> dict:
    """(a) The Trainer `python -m tuning train` builds, with its callbacks, timed per optimizer step."""
    from tuning.training.callbacks import GracefulStop, MetricsCallback
    from tuning.training.train import build_trainer, load_model_for_training, prepare_data

    train_set, validation_set = prepare_data(recipe, tokenizer, scratch)
    model = load_model_for_training(recipe, model_ref.path)
    timer = step_timer()
    trainer = build_trainer(recipe, scratch, model, tokenizer, train_set, validation_set,
                            callbacks=[MetricsCallback(scratch), GracefulStop(), timer])
    counter = trainer.data_collator = CountingCollator(trainer.data_collator)
    trainer.train()
    autocast = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else None
    return {**step_window(timer.marks, counter, warmup, steps), "params": compute_path_params(model),
            "precision": precision_used(recipe, model_ref, model, autocast)}


def precision_used(recipe, model_ref, model, autocast: str | None) -> str:
    """'base bf16, LoRA fp32, no autocast': what a variant's matmuls computed in."""
    from tuning.hardware.device import SHORT_DTYPE, compute_dtype

    base = SHORT_DTYPE[compute_dtype(recipe.model, model=model_ref.path)]
    lora = next(p.dtype for p in model.parameters() if p.requires_grad)
    lora = SHORT_DTYPE.get(str(lora).removeprefix("torch."), str(lora))
    return f"base {base}, LoRA {lora}, {f'{autocast} autocast' if autocast else 'no autocast'}"


def run_trl_sft(recipe, model_ref, tokenizer, scratch: Path, warmup: int, steps: int) -> dict:
    """(b) TRL SFTTrainer with a default SFTConfig but for what must match (batch, length, steps, CPU)."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset
    from tuning.models.loading import load_base_model, lora_config

    dataset = Dataset.from_list([{"messages": messages} for messages in train_rows(recipe)])
    config = SFTConfig(
        output_dir=str(scratch / "trl"),
        per_device_train_batch_size=recipe.training.batch_size,
        max_length=recipe.data.max_length,
        max_steps=warmup + steps,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
    )
    model = load_base_model(model_ref.path, recipe.model)  # the same 4-bit NF4 model object
    timer = step_timer()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(recipe.lora), callbacks=[timer])
    counter = trainer.data_collator = CountingCollator(trainer.data_collator)
    trainer.train()
    lora_dtype = next(p.dtype for p in trainer.model.parameters() if p.requires_grad)
    # Enums (optim, sampling strategy) as their plain values, for the JSON line.
    defaults = {name: getattr(getattr(config, name, None), "value", getattr(config, name, None))
                for name in TRL_DEFAULTS_SHOWN}
    defaults["lora_param_dtype"] = str(lora_dtype).replace("torch.", "")  # SFTTrainer casts QLoRA adapters to bf16
    defaults["checkpointing_on_model"] = trainer.model.get_base_model().is_activation_checkpointing
    return {**step_window(timer.marks, counter, warmup, steps), "params": compute_path_params(trainer.model),
            "trl_defaults": defaults,
            "precision": precision_used(recipe, model_ref, trainer.model, "bf16" if config.bf16 else None)}


def run_hand_loop(recipe, model_ref, tokenizer, warmup: int, steps: int) -> dict:
    """(c) forward / backward / AdamW step / zero_grad over pre-tokenized, length-sorted, pre-padded batches."""
    import torch
    from peft import get_peft_model

    from tuning.models.loading import load_base_model, lora_config

    max_length, size = recipe.data.max_length, recipe.training.batch_size
    encoded = [encode_for_training(tokenizer, messages, max_length) for messages in train_rows(recipe)]
    encoded.sort(key=lambda example: len(example.input_ids))
    batches = []
    for start in range(0, len(encoded), size):
        group = encoded[start : start + size]
        width = len(group[-1].input_ids)  # sorted: the last is the longest
        ids = torch.full((len(group), width), tokenizer.pad_token_id)
        labels = torch.full((len(group), width), IGNORE_INDEX)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, example in enumerate(group):
            ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
            labels[row, : len(example.labels)] = torch.tensor(example.labels)
            mask[row, : len(example.input_ids)] = 1
        batches.append({"input_ids": ids, "labels": labels, "attention_mask": mask})
    # Sorted within batches, shuffled across them: the timed steps see every length, not just the shortest.
    random.Random(recipe.training.seed).shuffle(batches)

    model = get_peft_model(load_base_model(model_ref.path, recipe.model), lora_config(recipe.lora))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.training.learning_rate,
                                  weight_decay=recipe.training.weight_decay)
    model.train()
    counter, marks = CountingCollator(lambda batch: batch), []
    for step in range(warmup + steps):
        batch = counter(batches[step % len(batches)])
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
    return {**step_window(marks, counter, warmup, steps), "params": compute_path_params(model),
            "precision": precision_used(recipe, model_ref, model, None)}


def run_variant(variant: str, args) -> dict:
    """Load the recipe, model files and tokenizer, then run and time one variant in this process."""
    import torch

    from tuning.models.loading import load_tokenizer, resolve_model
    from tuning.quiet import quiet_library_noise

    quiet_library_noise()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    if recipe.training.grad_accum != 1:  # batches are counted as optimizer steps, and b and c step every batch
        raise SystemExit(f"{args.recipe}: training.grad_accum must be 1 for this bench")
    recipe.training.max_steps = args.warmup + args.steps
    recipe.training.threads = args.threads
    recipe.training.eval_each_epoch = False  # TRL and the hand loop don't evaluate; a long --steps would
    recipe.training.scorecard = False
    model_ref = resolve_model(recipe.model.name, recipe.model.revision)
    tokenizer = load_tokenizer(model_ref.path)
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as scratch:
        if variant == "a":
            result = run_tuning_train(recipe, model_ref, tokenizer, Path(scratch), args.warmup, args.steps)
        elif variant == "b":
            result = run_trl_sft(recipe, model_ref, tokenizer, Path(scratch), args.warmup, args.steps)
        else:
            result = run_hand_loop(recipe, model_ref, tokenizer, args.warmup, args.steps)
    return {**result, "threads": torch.get_num_threads()}


def measure_matmul_peaks(threads: int) -> dict[str, float]:
    """This CPU's GEMM rate in GFLOP/s in fp32 and in bf16: the best of a few square matmuls, interleaved."""
    import torch

    torch.set_num_threads(threads)
    operands = {name: (torch.randn(PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE, dtype=dtype),
                       torch.randn(PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE, dtype=dtype))
                for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    best = dict.fromkeys(operands, float("inf"))
    for repeat in range(PEAK_REPEATS + 1):
        for name, (a, b) in operands.items():
            started = time.perf_counter()
            torch.mm(a, b)
            if repeat:  # the first round warms the thread pool and caches
                best[name] = min(best[name], time.perf_counter() - started)
    return {name: 2 * PEAK_MATMUL_SIZE**3 / seconds / 1e9 for name, seconds in best.items()}


def spawn_variant(variant: str, args) -> dict:
    """Run one variant in a fresh process (no memory or threads carried over) and read its JSON line."""
    command = [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--threads", str(args.threads), "--recipe", str(args.recipe)]
    print(f"running {NAMES[variant]} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{NAMES[variant]} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def report(results: dict[str, dict], peaks: dict[str, float], args) -> None:
    """The table, the MFU arithmetic, TRL's defaults, then the ratios (last)."""
    params = next(iter(results.values()))["params"]  # the same model in every variant
    flops_per_token = 6 * params
    best_peak = max(peaks, key=peaks.get)
    print(f"{args.steps} timed optimizer steps after {args.warmup} warm-up steps, batch and length from "
          f"{Path(args.recipe).name}, {args.threads} torch threads, on {machine_name()}")
    print(f"{'variant':32} {'tokens/s':>9} {'tokens':>7} {'seconds':>8} {'padding':>8} {'MFU':>6}  precision")
    for variant, r in results.items():
        padding = 1 - r["tokens"] / r["padded_tokens"]
        mfu = r["tokens_per_s"] * flops_per_token / (peaks[best_peak] * 1e9)
        print(f"{NAMES[variant]:32} {r['tokens_per_s']:9.1f} {r['tokens']:7d} {r['seconds']:8.1f} "
              f"{padding:8.1%} {mfu:6.1%}  {r['precision']}")
    print(f"MFU = tokens/s x 6N / peak; N = {params:,} weights on the compute path (every nn.Linear at full "
          f"shape: the 4-bit projections, LoRA A/B, the lm_head tied to the embeddings; not the embedding lookup, "
          f"not attention scores); peak = {peaks[best_peak]:.1f} GFLOP/s, this machine's best: {best_peak} "
          f"(best {PEAK_MATMUL_SIZE}x{PEAK_MATMUL_SIZE} torch.mm: fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} "
          f"GFLOP/s). 6N is the usual model-FLOPs convention: the frozen base needs no weight "
          f"gradients (~4N done) and (a) runs the lm_head only on answer tokens, so the work done is less.")
    if "b" in results:
        print("TRL defaults used:", json.dumps(results["b"]["trl_defaults"]))
    if "a" in results and "b" in results:
        print(f"a/b = {results['a']['tokens_per_s'] / results['b']['tokens_per_s']:.2f}  (target >= 2.0)")
    if "a" in results and "c" in results:
        print(f"a/c = {results['a']['tokens_per_s'] / results['c']['tokens_per_s']:.2f}  (target >= 0.9)")


def machine_name() -> str:
    """'AMD EPYC, 2 cores, no GPU' (or the GPU's name): what the figures were measured on."""
    import torch

    from tuning.hardware.machine_cache import cpu_name

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {os.cpu_count()} cores, {gpu}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first (at least 1)")
    parser.add_argument("--variants", default="a,b,c", help="which to run, in order: a, b, c")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, the same for all")
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="the recipe giving model, data, LoRA, batch")
    parser.add_argument("--variant", choices=sorted(NAMES), help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1 (the window starts at the end of a warm-up step)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.variant:
        print(RESULT_PREFIX + json.dumps(run_variant(args.variant, args)), flush=True)
        return
    results = {variant: spawn_variant(variant, args) for variant in args.variants.split(",")}
    report(results, measure_matmul_peaks(args.threads), args)


if __name__ == "__main__":
    main()
