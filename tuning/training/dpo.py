"""DPO on top of a finished run (`training.method: dpo`): TRL's DPOTrainer trains the parent's adapter to prefer each
row's chosen answer over its rejected one.

The reference is the parent's adapter itself, frozen, over the same base weights: given a PeftModel whose "default"
adapter is already trained and no ref_model, DPOTrainer (trl/trainer/dpo_trainer.py) adds a copy of it named "ref",
left out of training, and switches it in for the reference log-probs. One base model in memory, two small adapters;
only "default" is saved as the run's adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuning.config import RecipeConfig
from tuning.data.chat_template import TemplateError, encode_for_training, encode_prompt, with_system_prompt
from tuning.errors import UsageError
from tuning.runs.files import (
    DATA_FILE,
    RUN_DATA_DIR,
    RUN_PREFERENCES_FILE,
    RUN_VALIDATION_FILE,
    keep_source_documents,
    write_json,
)
from tuning.training.parent import ParentRun, copy_parent_data

log = logging.getLogger("tuning.training.train")

REFERENCE_ADAPTER = "ref"  # the name DPOTrainer gives its frozen copy of the adapter it was handed
POLICY_ADAPTER = "default"  # the adapter PeftModel.from_pretrained loads, which DPO trains and the run saves
UNBOUNDED = 10**9  # render whole conversations: the collator truncates to data.max_length itself


def prepare_preferences(recipe: RecipeConfig, tokenizer, run_dir: Path, parent: ParentRun,
                        record: bool = True) -> list[dict]:
    """Load and tokenize the recipe's preference rows; record them (data/preferences.jsonl, data.json) with the
    parent's train and held-out rows copied beside them, which the scorecard and its probes read."""
    from tuning.data.examples import fingerprint_examples, load_examples, write_jsonl
    from tuning.data.preferences import fingerprint_preferences, load_preferences, write_preferences

    loaded = load_preferences(recipe.data.train)
    log.info("preference data: %s", loaded.report.summary())
    if record:
        write_preferences(loaded.rows, run_dir / RUN_DATA_DIR / RUN_PREFERENCES_FILE)
        copy_parent_data(parent, run_dir, sources=not recipe.data.sources)
        keep_source_documents(recipe.data.sources, run_dir)  # the recipe's own documents, when it names them
        validation_rows = None
        if recipe.data.validation:  # the recipe's own held-out QA rows for the scorecard, else the parent's
            validation_rows = load_examples(recipe.data.validation).examples
            write_jsonl(validation_rows, run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE)
        fingerprint = fingerprint_preferences(loaded.rows)
        write_json(run_dir / DATA_FILE, {
            "method": recipe.training.method,
            "train_files": recipe.data.train,
            "train_examples": len(loaded.rows),
            "train_fingerprint": fingerprint,
            "preferences_fingerprint": fingerprint,
            "train_report": loaded.report.summary(),
            "validation_files": recipe.data.validation or [f"{parent.run.id}/{RUN_DATA_DIR}/{RUN_VALIDATION_FILE}"],
            **({"validation_examples": len(validation_rows),
                "validation_fingerprint": fingerprint_examples(validation_rows)} if validation_rows is not None
               else _parent_validation_summary(parent)),
        })
    return encode_preferences(loaded.rows, tokenizer, recipe)


def _parent_validation_summary(parent: ParentRun) -> dict:
    summary = parent.run.data_summary()
    return {key: summary[key] for key in ("validation_examples", "validation_fingerprint") if key in summary}


def encode_preferences(rows: list[dict], tokenizer, recipe: RecipeConfig) -> list[dict]:
    """Each pair as prompt, chosen and rejected token ids, rendered as training and chat render conversations (the
    recipe's system turn added, the BOS a Llama tokenizer starts text with included); pairs whose prompt alone fills
    data.max_length are reported and left out."""
    encoded, unusable = [], []
    for number, row in enumerate(rows, start=1):
        prompt = with_system_prompt(row["prompt"], recipe.data.system_prompt)
        prompt_ids = encode_prompt(tokenizer, prompt)
        if len(prompt_ids) >= recipe.data.max_length:
            unusable.append(number)
            continue
        pair = {"prompt_ids": prompt_ids}
        for side in ("chosen", "rejected"):
            full = encode_for_training(tokenizer, [*prompt, *row[side]], UNBOUNDED).input_ids
            if full[: len(prompt_ids)] != prompt_ids:
                raise TemplateError("the model's chat template renders a prompt differently once it is answered, so "
                                    "the answer's tokens can't be told apart -- use a model whose template is "
                                    "prefix-consistent")
            pair[f"{side}_ids"] = full[len(prompt_ids):]
        # What the length-grouped sampler sorts by: the longer side, which sets the batch's padded width.
        pair["length"] = len(prompt_ids) + max(len(pair["chosen_ids"]), len(pair["rejected_ids"]))
        encoded.append(pair)
    if unusable:
        log.warning("%d preference pair(s) left out: the prompt alone fills data.max_length=%d, so no answer token "
                    "is left to compare (rows %s) -- raise data.max_length or shorten them",
                    len(unusable), recipe.data.max_length, unusable[:20])
    if not encoded:
        raise UsageError("no trainable preference pair: every prompt fills data.max_length -- raise it")
    return encoded


def dpo_config(recipe: RecipeConfig, run_dir: Path):
    """The recipe's training section as TRL's DPOConfig (the one place they meet), as training_arguments does for
    SFT: the same precision, logging, checkpoints, seed and sampler."""
    from trl import DPOConfig

    from tuning.training.train import loop_arguments  # train.py imports this module lazily

    return DPOConfig(
        **loop_arguments(recipe, run_dir),
        beta=recipe.training.dpo_beta,
        max_length=recipe.data.max_length,
        # The reference (the parent's adapter) never changes: its log-probs are taken once, before the first step,
        # instead of a forward pass per step in every epoch (bench/dpo_throughput.py).
        precompute_ref_log_probs=True,
        eval_strategy="no",  # the scorecard judges the answers; preference pairs are all trained on
    )


def build_dpo_trainer(recipe: RecipeConfig, run_dir: Path, model, tokenizer, pairs: list[dict], callbacks: list):
    """TRL's DPOTrainer over the parent's adapter (model: a PeftModel with it loaded trainable), on pairs we
    tokenized; its reference is the frozen "ref" copy it makes of that adapter."""
    import torch
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    from datasets import Dataset

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on pairs already tokenized by encode_preferences: TRL's own tokenizing of conversations leaves
        out the BOS that training, chat and export put first for a Llama tokenizer."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    # The reference log-probs are taken while the trainer is built, before Trainer.train() sets training mode. On a
    # CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights for inference the first time it runs out of
    # training mode without gradients, for good; training through the repacked weights measured a third of the
    # gradient (0.19 vs 0.56 at step 1) and a reward margin that barely moved. In training mode it never repacks.
    model.train()
    trainer = PretokenizedDPOTrainer(model=model, ref_model=None, args=dpo_config(recipe, run_dir),
                                     train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                                     callbacks=callbacks)
    if REFERENCE_ADAPTER not in trainer.model.peft_config:
        raise RuntimeError("DPOTrainer made no reference copy of the parent's adapter: it would compare against the "
                           "bare base model instead of the parent")
    # Over a 4-bit base TRL casts the trainable adapter to bf16 after copying it to "ref". The SFT path keeps LoRA
    # weights, their updates and optimizer state in fp32 (bf16 can round a small update away), so the policy takes
    # back the fp32 values from that untouched copy: it starts exactly equal to its reference, as DPO assumes.
    # The optimizer is made in train(), after this.
    weights = dict(trainer.model.named_parameters())
    for name, parameter in weights.items():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            original = weights.get(name.replace(f".{POLICY_ADAPTER}.", f".{REFERENCE_ADAPTER}."))
            parameter.data = (original if original is not None else parameter).detach().float().clone()
    trainer.remove_callback(PrinterCallback)  # MetricsCallback logs the same, once
    return trainer


def drop_reference(model) -> None:
    """Remove the frozen reference copy, so the run saves the trained adapter alone."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REFERENCE_ADAPTER)
