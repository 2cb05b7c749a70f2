"""`python -m tuning train`: supervised fine-tuning with LoRA / QLoRA into a self-describing run folder.

The loop is the transformers Trainer (checkpoints, resume, eval, schedules); what we add is
assistant-only labels from the chat template, a loss that runs the lm_head only on those labels
(tuning/training/loss.py), length-grouped dynamic padding (no tokens wasted on padding to
max_length), metrics.jsonl for the UI, and a graceful stop. A run with `training.parent_run` continues that
run's adapter (tuning/training/parent.py): an SFT top-up, or DPO on preference pairs (tuning/training/dpo.py).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from tuning.atomic import disk_full_error, is_disk_full, staged_dir
from tuning.chat.probes.inputs import check_probe_inputs
from tuning.config import DPO, RecipeConfig, TrainingConfig, save_recipe
from tuning.data.chat_template import IGNORE_INDEX, EncodedExample, encode_for_training, with_system_prompt
from tuning.data.examples import (
    find_overlap,
    fingerprint_examples,
    load_examples,
    split_examples,
    user_prompts,
    write_jsonl,
)
from tuning.errors import UsageError
from tuning.hardware.device import compute_dtype, cpu_measurement, read_device, trainer_precision
from tuning.models.loading import (
    display_name,
    load_base_model,
    load_tokenizer,
    lora_config,
    resolve_model,
)
from tuning.models.memory import free_memory
from tuning.runs.environment import library_versions, setup_logging
from tuning.runs.files import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    COMPLETED,
    CONFIG_FILE,
    DATA_FILE,
    ENVIRONMENT_FILE,
    FAILED,
    RUN_DATA_DIR,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
    RUNNING,
    SCORECARD_PHASE,
    STOPPED,
    checkpoint_step,
    keep_source_documents,
    latest_checkpoint,
    read_metrics,
    remove_incomplete_checkpoints,
    truncate_metrics,
    write_json,
    write_status,
)
from tuning.runs.run import Run
from tuning.training.curves import save_training_curves
from tuning.training.distributed import Placement, effective_batch, gpus_per_process, read_placement
from tuning.training.parent import (
    ParentRun,
    check_parent,
    check_resolved_base,
    inherit_from_parent,
    parent_validation_rows,
    replay_rows,
    write_lineage,
)
from tuning.training.tracking import report_arguments

log = logging.getLogger("tuning.training.train")

SCORECARD_NICENESS = 10  # lower CPU priority for the scorecard, which runs beside the chat


def prepare_data(recipe: RecipeConfig, tokenizer, run_dir: Path, record: bool = True,
                 parent: ParentRun | None = None) -> tuple[list[dict], list[dict]]:
    """Load, validate, split and tokenize the recipe's data; record what was used in the run folder.

    Every training process prepares the same rows (the split is seeded); only the one with
    record=True writes them, so a distributed run leaves one copy. A top-up of a parent run mixes in
    training.replay of its rows and, without data.validation, is scored on the parent's held-out rows."""
    system = recipe.data.system_prompt
    max_length = recipe.data.max_length

    def count_tokens(messages):
        return len(encode_for_training(tokenizer, with_system_prompt(messages, system), 10**9).input_ids)

    train = load_examples(recipe.data.train, max_tokens=max_length, count_tokens=count_tokens)
    log.info("train data: %s", train.report.summary())
    if recipe.data.validation:
        validation = load_examples(recipe.data.validation, max_tokens=max_length, count_tokens=count_tokens)
        log.info("validation data: %s", validation.report.summary())
        train_rows, validation_rows = train.examples, validation.examples
    elif parent is not None:  # a few corrections split in two would score the top-up on a handful of its own rows
        train_rows, validation_rows = train.examples, parent_validation_rows(parent)
    else:
        train_rows, validation_rows = split_examples(
            train.examples, recipe.data.validation_fraction, recipe.training.seed
        )
    new_rows = train_rows
    replay = replay_rows(parent, recipe.training.replay, recipe.training.seed, user_prompts(new_rows)) if parent else []
    if replay:
        log.info("replaying %d of %s's training rows beside %d new ones", len(replay), parent.run.id, len(new_rows))
        train_rows = new_rows + replay
    check_probe_inputs(recipe, user_prompts(train_rows))  # before training, not when the scorecard comes to them
    leaked = find_overlap(train_rows, validation_rows)
    if leaked:
        log.warning("%d validation question(s) also appear in the training data (validation rows %s): their "
                    "scores measure memory, not learning -- remove them from one side", len(leaked), leaked[:20])
    if record:
        hub_revisions = {**train.report.revisions, **(validation.report.revisions if recipe.data.validation else {})}
        write_jsonl(train_rows, run_dir / RUN_DATA_DIR / RUN_TRAIN_FILE)
        write_jsonl(validation_rows, run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE)
        keep_source_documents(recipe.data.sources, run_dir)
        write_json(
            run_dir / DATA_FILE,
            {
                "train_files": recipe.data.train,
                "validation_files": recipe.data.validation,
                "train_examples": len(train_rows),
                "validation_examples": len(validation_rows),
                "train_fingerprint": fingerprint_examples(train_rows),
                "validation_fingerprint": fingerprint_examples(validation_rows),
                "train_report": train.report.summary(),
                # hub: entries -> the commit their rows came from (a rerun pins @sha to get the same rows)
                **({"hub_revisions": hub_revisions} if hub_revisions else {}),
                **({"new_examples": len(new_rows), "new_fingerprint": fingerprint_examples(new_rows),
                    "replay_from": parent.run.id, "replay_examples": len(replay),
                    "replay_fingerprint": fingerprint_examples(replay)} if parent else {}),
            },
        )
    return encode_rows(train_rows, tokenizer, recipe), encode_rows(validation_rows, tokenizer, recipe)


def encode_row(row: dict, tokenizer, recipe: RecipeConfig) -> EncodedExample:
    """One conversation as training tokenizes it: the recipe's system turn added where it has none, the chat
    template, assistant-only labels, cut at data.max_length (the label-mask preview shows this same call)."""
    return encode_for_training(
        tokenizer, with_system_prompt(row["messages"], recipe.data.system_prompt), recipe.data.max_length
    )


def encode_rows(rows: list[dict], tokenizer, recipe: RecipeConfig) -> list[dict]:
    """Tokenize conversations; rows whose answer is cut off entirely by max_length are reported and left out."""
    encoded, unusable = [], []
    for number, row in enumerate(rows, start=1):
        example = encode_row(row, tokenizer, recipe)
        if all(label == IGNORE_INDEX for label in example.labels):
            unusable.append(number)
            continue
        encoded.append({"input_ids": example.input_ids, "labels": example.labels})
    if unusable:
        log.warning(
            "%d conversation(s) left out: the prompt alone fills data.max_length=%d, so no answer token is "
            "left to learn (rows %s) -- raise data.max_length or shorten them",
            len(unusable), recipe.data.max_length, unusable[:20],
        )
    if not encoded and rows:
        raise UsageError("no trainable conversation: every answer is beyond data.max_length")
    return encoded


class PadToLongest:
    """Collate by padding to the longest conversation in the batch (not to max_length)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            ids[row, :length] = torch.tensor(feature["input_ids"])
            labels[row, :length] = torch.tensor(feature["labels"])
            mask[row, :length] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


WSD_SCHEDULER = "warmup_stable_decay"


def decay_steps(t: TrainingConfig, rows: int, processes: int = 1) -> int:
    """The optimizer steps of a warmup-stable-decay schedule's final decay: decay_ratio of the run's steps."""
    per_epoch = math.ceil(math.ceil(rows / (t.batch_size * max(processes, 1))) / t.grad_accum)
    total = t.max_steps if t.max_steps > 0 else math.ceil(per_epoch * t.epochs)
    return max(1, round(total * t.decay_ratio))


def training_arguments(recipe: RecipeConfig, run_dir: Path, has_validation: bool):
    """The recipe's training section as transformers TrainingArguments (the one place they meet).

    Under `accelerate launch` the Trainer reads the launcher's environment itself (DDP, or FSDP from
    the accelerate config): batch_size stays per process, so the effective batch grows with the processes."""
    from transformers import TrainingArguments

    return TrainingArguments(
        **loop_arguments(recipe, run_dir),
        eval_strategy="epoch" if (recipe.training.eval_each_epoch and has_validation) else "no",
    )


def loop_arguments(recipe: RecipeConfig, run_dir: Path) -> dict:
    """The recipe's loop settings as the keyword arguments transformers' TrainingArguments and TRL's configs
    share (SFT and DPO translate them here, in one place)."""
    t = recipe.training
    device = read_device()
    on_gpu = device.is_gpu
    return dict(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a share of the total steps
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        activation_checkpointing=t.gradient_checkpointing,  # TRL turns it on by default: ~20% slower, not needed
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        # bf16 only where the GPU has it natively, fp16 on a T4 (TRL would autocast to bf16 everywhere, a CPU too)
        **trainer_precision(recipe.model, device),
        use_cpu=not on_gpu,
        ddp_find_unused_parameters=False,  # the frozen base has no gradients by design: nothing to search for
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        dataloader_pin_memory=on_gpu,
        include_num_input_tokens_seen="non_padding",  # counted as batches are trained: tokens/s in metrics
        # training.report_to: TensorBoard and trackio, logging into the run folder's logs/ (never a Space)
        **report_arguments(recipe, run_dir),
        disable_tqdm=True,
    )


def write_scorecard(run_dir: Path, training: TrainingConfig) -> None:
    """Base vs tuned on the run's validation questions (eval.json); a failure here never fails the run."""
    from tuning.chat.scorecard import format_summary, score_run
    from tuning.training.parent_scorecard import compare_with_parent

    write_status(run_dir, RUNNING, phase=SCORECARD_PHASE)
    # The adapter is already open in Chat: on a shared CPU the person chatting goes first, the scorecard after.
    os.nice(SCORECARD_NICENESS)
    log.info("scoring base vs tuned on the validation questions")
    try:
        # Quick mode: a scorecard of N questions asks a sample of N of each probe's set too.
        report = score_run(run_dir, max_questions=training.scorecard_questions, seed=training.seed,
                           probes=tuple(training.probes), probe_sample=training.scorecard_questions)
        log.info("scorecard:\n%s", format_summary(report))
        compare_with_parent(run_dir, report)  # a child run: did it keep, gain or lose what its parent knew
    except Exception as exc:  # the adapter is saved and good; say why the scorecard is missing
        log.exception("scorecard failed (the adapter is fine; rerun `python -m tuning eval --run %s`): %s",
                      run_dir, exc)


def train(recipe: RecipeConfig, run_dir: str | os.PathLike, resume: bool = False) -> Path:
    """Fine-tune per the recipe into run_dir; returns the adapter folder. Signals stop it gracefully.

    Launched by `accelerate launch` / torchrun, every process calls this; only the main one writes the run folder."""
    run_dir = Path(run_dir)
    placement = read_placement()
    setup_logging(run_dir, to_file=placement.is_main)
    if not placement.is_main:
        return _train(recipe, run_dir, resume, placement)
    write_status(run_dir, RUNNING, pid=os.getpid(), started=time.time())
    try:
        return _train(recipe, run_dir, resume, placement)
    except BaseException as exc:
        failure = disk_full_error(run_dir) if is_disk_full(exc, run_dir) else None  # says what's free now
        if failure:
            # The checkpoint the full disk cut short would only be passed over by --resume: give its space back.
            remove_incomplete_checkpoints(run_dir)
        log.exception("training failed: %s", failure or exc)
        write_status(run_dir, FAILED, error=str(failure) if failure else f"{type(exc).__name__}: {exc}", pid=None)
        if failure:
            raise failure from exc
        raise


def load_model_for_training(recipe: RecipeConfig, model_path: Path, placement: Placement | None = None,
                            parent: ParentRun | None = None):
    """The base model (4-bit NF4 for QLoRA) with the recipe's fresh LoRA adapter attached, or the parent run's
    adapter loaded trainable, to train on from where it ended."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    model = load_base_model(model_path, recipe.model, placement)
    if recipe.model.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=recipe.training.gradient_checkpointing
        )
    if parent:
        log.info("continuing %s's adapter (sha256 %s)", parent.run.id, parent.adapter_sha256[:12])
        model = PeftModel.from_pretrained(model, str(parent.run.adapter_dir), is_trainable=True)
    else:
        model = get_peft_model(model, lora_config(recipe.lora, model))
    trainable, total = model.get_nb_trainable_parameters()
    log.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def build_trainer(recipe: RecipeConfig, run_dir: Path, model, tokenizer, train_set: list[dict],
                  validation_set: list[dict], callbacks: list):
    """The Trainer that `python -m tuning train` runs (bench/train_throughput.py times this same one)."""
    from transformers.trainer_callback import PrinterCallback

    from tuning.training.loss import LabelOnlyLossTrainer

    args = training_arguments(recipe, run_dir, bool(validation_set))
    if recipe.training.lr_scheduler == WSD_SCHEDULER:  # transformers needs the decay's length in steps
        args.lr_scheduler_kwargs = {"num_decay_steps": decay_steps(recipe.training, len(train_set), args.world_size)}
    trainer = LabelOnlyLossTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set or None,
        data_collator=PadToLongest(tokenizer.pad_token_id),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # MetricsCallback logs the same, once
    return trainer


def save_adapter(model, tokenizer, adapter_dir: Path) -> None:
    """Save the adapter and tokenizer into a temp folder renamed into place, so no one loads half an adapter."""
    # has_adapter() and the chat look for adapter/adapter_config.json, which save_pretrained writes first
    with staged_dir(adapter_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)  # chat template travels with the adapter


def save_sharded_adapter(trainer, tokenizer, adapter_dir: Path, placement: Placement) -> None:
    """FSDP: gather the full adapter state on the main process (Trainer.save_model does the gathering,
    called on every process), into a staging folder the main process then moves into place."""
    staging = adapter_dir.with_name(f".{adapter_dir.name}-gathering")
    trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if placement.is_main:
        with staged_dir(adapter_dir) as target:
            for item in staging.iterdir():
                item.rename(target / item.name)
            tokenizer.save_pretrained(target)
        staging.rmdir()


def _train(recipe: RecipeConfig, run_dir: Path, resume: bool, placement: Placement) -> Path:
    import torch

    from tuning.training.callbacks import GracefulStop, MetricsCallback

    if recipe.training.threads:
        torch.set_num_threads(recipe.training.threads)
    stopper = GracefulStop()  # installed first: a signal during model loading still ends cleanly
    checkpoint = latest_checkpoint(run_dir) if resume else None  # saved whole: a kill mid-save is passed over
    if resume and checkpoint is None:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", run_dir / CHECKPOINTS_DIR)
    elif checkpoint is not None:
        log.info("resuming from step %d (%s)", checkpoint_step(checkpoint), checkpoint.name)

    parent = check_parent(recipe)  # before any model loads: DPO without a finished parent on this base is refused
    if parent:
        recipe = inherit_from_parent(recipe, parent)
    dpo = recipe.training.method == DPO
    if dpo and placement.fsdp:
        raise UsageError("DPO doesn't run under FSDP here -- launch it in one process, or with accelerate's DDP "
                         "config")
    model_ref = resolve_model(recipe.model.name, recipe.model.revision)
    if parent:
        check_resolved_base(parent, model_ref)
    t = recipe.training
    gpus = gpus_per_process(placement)
    batch = effective_batch(t.batch_size, t.grad_accum, placement.world_size, gpus)
    log.info("base model: %s (%s)", display_name(model_ref), model_ref.path)
    device = read_device()
    dtype = compute_dtype(recipe.model, device, model_ref.path)
    measured = cpu_measurement(recipe.model, device, model_ref.path)
    log.info("device: %s%s", device.label(dtype), f"; {measured.summary()}" if measured else "")
    log.info("effective batch: %d conversations per optimizer step (%d per process x %d accumulated x %d "
             "process(es)%s)", batch, t.batch_size * gpus, t.grad_accum, placement.world_size,
             ", FSDP" if placement.fsdp else "")
    if gpus > 1:
        log.warning("this process sees %d GPUs, so the Trainer takes training.batch_size=%d per GPU: %d per step "
                    "-- set CUDA_VISIBLE_DEVICES=0 for one GPU, or `accelerate launch` for one process per GPU",
                    gpus, t.batch_size, t.batch_size * gpus)
    if placement.is_main:
        save_recipe(recipe, run_dir / CONFIG_FILE, header=f"resolved recipe of this run; base model at {model_ref.path}")
        write_json(run_dir / ENVIRONMENT_FILE, {**library_versions(), "device": device.record(dtype, measured),
            "base_model": {"name": model_ref.name, "hub_id": model_ref.hub_id, "revision": model_ref.revision},
            "processes": placement.world_size, "fsdp": placement.fsdp, "effective_batch": batch})
        if parent:
            write_lineage(run_dir, recipe, parent)

    tokenizer = load_tokenizer(model_ref.path)
    if dpo:
        from tuning.training.dpo import build_dpo_trainer, drop_reference, prepare_preferences

        train_set = prepare_preferences(recipe, tokenizer, run_dir, parent, record=placement.is_main)
        validation_set = []  # pairs are all trained on; the scorecard judges the answers
    else:
        train_set, validation_set = prepare_data(recipe, tokenizer, run_dir, record=placement.is_main, parent=parent)
    model = load_model_for_training(recipe, model_ref.path, placement, parent)

    elapsed_before = 0.0
    if checkpoint:
        step = checkpoint_step(checkpoint)
        if placement.is_main:
            truncate_metrics(run_dir, step)
        elapsed_before = max((r.get("elapsed_s", 0.0) for r in read_metrics(run_dir)), default=0.0)
        log.info("resuming from %s (step %d)", checkpoint, step)
    elif not resume and placement.is_main:
        truncate_metrics(run_dir, -1)

    # Only the main process writes metrics.jsonl; every process honours a stop (at the same step).
    callbacks = [MetricsCallback(run_dir, elapsed_before)] if placement.is_main else []
    if dpo:
        trainer = build_dpo_trainer(recipe, run_dir, model, tokenizer, train_set, callbacks=[*callbacks, stopper])
    else:
        trainer = build_trainer(recipe, run_dir, model, tokenizer, train_set, validation_set,
                                callbacks=[*callbacks, stopper])
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if dpo:
        drop_reference(model)  # the run's adapter is the trained one alone

    step_reached, total_steps = trainer.state.global_step, trainer.state.max_steps
    adapter_dir = run_dir / ADAPTER_DIR
    if placement.fsdp:  # the adapter's weights are sharded: every process takes part in gathering them
        save_sharded_adapter(trainer, tokenizer, adapter_dir, placement)
    elif placement.is_main:
        save_adapter(model, tokenizer, adapter_dir)
    if not placement.is_main:  # the curves, scorecard and status are the main process's to write
        return adapter_dir
    save_training_curves(run_dir)
    # DPO trains on pairs; the held-out questions it is scored on are its parent's (or data.validation's) rows.
    held_out = bool(validation_set) or (dpo and Run(run_dir).validation_file.is_file())
    if recipe.training.scorecard and held_out and not stopper.requested:
        # The scorecard loads the base once more, with the adapter switchable: the training model goes first.
        # `del` alone leaves it to the collector's next pass if anything puts it in a reference cycle (a hook
        # that refers back to it, a logged exception's frames): collect now, and give the GPU cache back.
        del trainer, model
        free_memory()
        write_scorecard(run_dir, recipe.training)
    state = STOPPED if stopper.requested else COMPLETED
    write_status(run_dir, state, pid=None, phase=None, step=step_reached, total_steps=total_steps)
    log.info("%s at step %d; adapter saved to %s", state, step_reached, adapter_dir)
    return adapter_dir
