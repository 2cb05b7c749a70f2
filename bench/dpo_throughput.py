"""DPO throughput: `tuning train` with `method: dpo` vs TRL's DPOTrainer with its defaults, in pairs/s.

Target (issue 20): (a) >= 1.0x (b). Both train the same parent run's adapter (loaded trainable over the same 4-bit
NF4 base, exactly as `tuning train` loads it) on the same preference pairs (configs/kalevala-dpo.yaml's, with its
system prompt) at the same batch size, and both take the reference from TRL's frozen "ref" copy of that adapter
(ref_model=None). (a) is the trainer `tuning train` builds, with its callbacks; (b) is a plain DPOConfig with only
what must match set (batch, max length, steps, CPU). Each runs in its own process, one after the other, with the
same torch threads, and is timed over the same optimizer steps after untimed warm-up steps: pairs/s = pairs of the
timed steps / their wall seconds. Work done once before the first step (TRL's tokenizing, (a)'s reference
log-probs, taken once since the reference never changes) is outside that window, so a second figure times the whole
run: from building the trainer to the end of the last step, over every pair trained. Prints the CPU's name, each
variant's precision, and the ratios last.

    HF_HUB_OFFLINE=1 python bench/dpo_throughput.py [--parent runs/kalevala-cpu] [--steps 12] [--warmup 2]

Without --parent a short parent is trained first (configs/kalevala.yaml, 20 steps, no scorecard).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import RESULT_PREFIX, machine_name, step_timer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "configs" / "kalevala-dpo.yaml"
NAMES = {"a": "(a) tuning train, method dpo", "b": "(b) TRL DPOTrainer, defaults"}
QUICK_PARENT_STEPS = 20
# The DPOConfig fields whose TRL defaults decide its speed; read from the instance and printed.
TRL_DEFAULTS_SHOWN = ("gradient_checkpointing", "bf16", "precompute_ref_log_probs", "padding_free",
                      "pad_to_multiple_of", "train_sampling_strategy", "disable_dropout", "learning_rate",
                      "logging_steps")


class PairCounter:
    """Wraps the preference collator to record each batch's pairs and its real and padded tokens, in order."""

    def __init__(self, collate) -> None:
        self.collate = collate
        self.pairs: list[int] = []
        self.real: list[int] = []
        self.padded: list[int] = []

    def __call__(self, features):
        batch = self.collate(features)
        self.pairs.append(batch["input_ids"].shape[0] // 2)  # chosen rows, then rejected rows
        self.real.append(int(batch["attention_mask"].sum()))
        self.padded.append(batch["input_ids"].numel())
        return batch


def timed_window(marks: list[float], counter: PairCounter, warmup: int, steps: int, started: float) -> dict:
    """Pairs, padding and seconds of the timed steps (grad_accum 1: one batch per optimizer step), and of the whole
    run from `started` (the trainer about to be built)."""
    if len(marks) < warmup + steps:
        raise RuntimeError(f"only {len(marks)} steps ran, {warmup + steps} needed")
    seconds = marks[warmup + steps - 1] - marks[warmup - 1]
    window = slice(warmup, warmup + steps)
    pairs = sum(counter.pairs[window])
    whole = marks[-1] - started
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds,
            "padding": 1 - sum(counter.real[window]) / sum(counter.padded[window]),
            "whole_seconds": whole, "whole_pairs_per_s": sum(counter.pairs) / whole}


def precision_of(trainer, base_dtype: str) -> str:
    """'base bf16, LoRA float32, no autocast, no checkpointing': what the variant's matmuls ran in."""
    from tuning.hardware.device import SHORT_DTYPE

    lora = next(p.dtype for p in trainer.model.parameters() if p.requires_grad)
    autocast = "bf16 autocast" if trainer.args.bf16 else "fp16 autocast" if trainer.args.fp16 else "no autocast"
    checkpointing = "checkpointing" if trainer.args.activation_checkpointing else "no checkpointing"
    return (f"base {SHORT_DTYPE.get(base_dtype, base_dtype)}, LoRA {str(lora).removeprefix('torch.')}, {autocast}, "
            f"{checkpointing}")


def run_variant(variant: str, args) -> dict:
    """Train the parent's adapter with DPO for warmup + steps optimizer steps in this process, timed."""
    import torch

    from tuning.config import load_recipe
    from tuning.hardware.device import compute_dtype
    from tuning.models.loading import load_tokenizer, resolve_model
    from tuning.quiet import quiet_library_noise
    from tuning.training.parent import check_parent, inherit_from_parent
    from tuning.training.train import load_model_for_training

    quiet_library_noise()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    recipe.training.parent_run = str(args.parent)
    recipe.training.max_steps = args.warmup + args.steps
    recipe.training.threads = args.threads
    recipe.training.scorecard = False
    if recipe.training.grad_accum != 1:
        raise SystemExit(f"{args.recipe}: training.grad_accum must be 1 for this bench")
    parent = check_parent(recipe)
    recipe = inherit_from_parent(recipe, parent)
    model_ref = resolve_model(recipe.model.name, recipe.model.revision)
    tokenizer = load_tokenizer(model_ref.path)
    timer = step_timer()
    with tempfile.TemporaryDirectory(prefix="dpo-throughput-") as scratch:
        scratch = Path(scratch)
        started = 0.0
        if variant == "a":
            from tuning.training.callbacks import GracefulStop, MetricsCallback
            from tuning.training.dpo import build_dpo_trainer, prepare_preferences

            pairs = prepare_preferences(recipe, tokenizer, scratch, parent)
            model = load_model_for_training(recipe, model_ref.path, parent=parent)
            started = time.perf_counter()
            trainer = build_dpo_trainer(recipe, scratch, model, tokenizer, pairs,
                                        callbacks=[MetricsCallback(scratch), GracefulStop(), timer])
            defaults = None
        else:
            from trl import DPOConfig, DPOTrainer

            from datasets import Dataset
            from tuning.data.chat_template import with_system_prompt
            from tuning.data.preferences import load_preferences

            rows = [{"prompt": with_system_prompt(row["prompt"], recipe.data.system_prompt), "chosen": row["chosen"],
                     "rejected": row["rejected"]} for row in load_preferences(recipe.data.train).rows]
            config = DPOConfig(output_dir=str(scratch / "trl"), per_device_train_batch_size=recipe.training.batch_size,
                               max_length=recipe.data.max_length, max_steps=args.warmup + args.steps,
                               use_cpu=not torch.cuda.is_available(), report_to="none")
            model = load_model_for_training(recipe, model_ref.path, parent=parent)
            started = time.perf_counter()
            trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                                 processing_class=tokenizer, callbacks=[timer])
            defaults = {name: getattr(getattr(config, name, None), "value", getattr(config, name, None))
                        for name in TRL_DEFAULTS_SHOWN}
        counter = trainer.data_collator = PairCounter(trainer.data_collator)
        trainer.train()
    base_dtype = compute_dtype(recipe.model, model=model_ref.path)
    return {**timed_window(timer.marks, counter, args.warmup, args.steps, started),
            "precision": precision_of(trainer, base_dtype),
            "reference": ("ref adapter" if "ref" in trainer.model.peft_config else "adapters disabled")
            + (" (log-probs precomputed)" if trainer.args.precompute_ref_log_probs else " (a forward pass a step)"),
            "trl_defaults": defaults, "threads": torch.get_num_threads()}


def spawn_variant(variant: str, args) -> dict:
    """Run one variant in a fresh process (no memory or threads carried over) and read its JSON line."""
    command = [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--threads", str(args.threads), "--recipe", str(args.recipe), "--parent",
               str(args.parent)]
    print(f"running {NAMES[variant]} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{NAMES[variant]} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def train_quick_parent(folder: Path) -> Path:
    """A short SFT run of configs/kalevala.yaml to be the parent (no scorecard)."""
    run = folder / "parent"
    print(f"training a {QUICK_PARENT_STEPS}-step parent in {run} ...", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "tuning", "train", "--config", str(REPO / "configs" / "kalevala.yaml"), "--output",
               str(run), "--set", f"training.max_steps={QUICK_PARENT_STEPS}", "--set", "training.scorecard=false",
               "--set", "training.probes=[]", "--set", "training.logging_steps=10"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"the parent run failed:\n{done.stderr[-4000:]}")
    return run


def report(results: dict[str, dict], args) -> None:
    """The table, TRL's defaults, then the ratio (last)."""
    print(f"{args.steps} timed optimizer steps after {args.warmup} warm-up steps, pairs and batch from "
          f"{Path(args.recipe).name}, parent {Path(args.parent).name}, {args.threads} torch threads, on "
          f"{machine_name()}")
    print(f"{'variant':32} {'pairs/s':>8} {'pairs':>6} {'seconds':>8} {'padding':>8} {'whole run':>10}  "
          "reference, precision")
    for variant, r in results.items():
        print(f"{NAMES[variant]:32} {r['pairs_per_s']:8.2f} {r['pairs']:6d} {r['seconds']:8.1f} {r['padding']:8.1%} "
              f"{r['whole_pairs_per_s']:6.2f}/s  {r['reference']}, {r['precision']}")
    print(f"whole run: pairs/s from building the trainer to the end of its last step ({args.warmup + args.steps} "
          "steps), once-only work included")
    if "b" in results:
        print("TRL defaults used:", json.dumps(results["b"]["trl_defaults"]))
    if "a" in results and "b" in results:
        whole = results["a"]["whole_pairs_per_s"] / results["b"]["whole_pairs_per_s"]
        print(f"a/b = {results['a']['pairs_per_s'] / results['b']['pairs_per_s']:.2f} per step, {whole:.2f} whole run "
              "(target >= 1.0)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=Path, help="a finished run to continue (default: train a short one first)")
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (at least 1)")
    parser.add_argument("--variants", default="a,b", help="which to run, in order: a, b")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, the same for both")
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="the DPO recipe giving pairs, batch, length")
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
    with tempfile.TemporaryDirectory(prefix="dpo-parent-") as folder:
        args.parent = (args.parent or train_quick_parent(Path(folder))).resolve()
        started = time.perf_counter()
        results = {variant: spawn_variant(variant, args) for variant in args.variants.split(",")}
        report(results, args)
        print(f"(bench wall time {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
