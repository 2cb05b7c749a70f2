"""A run that continues another run's adapter (`training.parent_run`): the checks that it may, made before any model
loads, and what the child takes from and records of its parent.

An adapter fits only the base model it was trained on, so the parent must be finished (its adapter saved whole) and
on the same base model (name and commit); the child trains the parent's adapter itself, so its LoRA shape is the
parent's whatever the child's recipe says. DPO always has a parent: the parent's adapter is also its reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuning.config import AUTO_MODEL, DPO, EMBEDDED_MODEL, LoraConfig, RecipeConfig
from tuning.errors import UsageError
from tuning.runs.files import (
    COMPLETED,
    LINEAGE_FILE,
    RUN_DATA_DIR,
    RUN_SOURCES_DIR,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
    STOPPED,
    write_json,
)
from tuning.runs.run import BaseModel, Run

log = logging.getLogger("tuning.training.train")

PARENT_FIX = "--set training.parent_run=runs/<a finished SFT run>"
# A stopped run saved its adapter as gracefully as a completed one; a failed or unfinished one may have none.
USABLE_PARENT_STATES = (COMPLETED, STOPPED)
ADAPTER_WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what the adapter is, not its tokenizer


@dataclass(frozen=True)
class ParentRun:
    """The finished run a child continues: its folder, the base model it trained on and its adapter's digest."""

    run: Run
    base: BaseModel
    adapter_sha256: str

    def record(self) -> dict:
        """The parent as the child's lineage.json names it."""
        return {"id": self.run.id, "path": str(self.run.path.resolve()), "adapter_sha256": self.adapter_sha256,
                "base_model": dataclasses.asdict(self.base)}


def fingerprint_adapter(adapter_dir: Path) -> str:
    """SHA-256 of an adapter's config and weights (its tokenizer files left out): pins a child to the exact
    adapter it continued."""
    digest = hashlib.sha256()
    for name in ADAPTER_WEIGHT_FILES:
        path = adapter_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def check_parent(recipe: RecipeConfig) -> ParentRun | None:
    """The recipe's parent run, checked before any model loads (None without one); UsageError naming the fix when
    DPO has none, or the parent is unfinished, adapterless or on another base model."""
    t = recipe.training
    if not t.parent_run:
        if t.method == DPO:
            raise UsageError(f"training.method dpo continues a finished run's adapter, and none is set -- "
                             f"{PARENT_FIX}")
        if t.replay:
            raise UsageError(f"training.replay={t.replay} mixes in rows of a parent run's training data, and no "
                             f"parent is set -- {PARENT_FIX}, or set training.replay=0")
        return None
    if t.method == DPO and t.replay:
        raise UsageError("training.replay is for an SFT top-up; DPO stays near its parent through "
                         "training.dpo_beta instead -- set training.replay=0 (or training.method=sft)")
    run = Run(Path(t.parent_run).expanduser())
    if not run.config_file.is_file():
        raise UsageError(f"training.parent_run: {t.parent_run} is not a run folder (no config.yaml) -- "
                         f"{PARENT_FIX}")
    state = run.state()
    if state not in USABLE_PARENT_STATES or not run.has_adapter():
        why = f"is {state}" if state else "has not started"
        why += "" if run.has_adapter() else " and has no adapter"
        raise UsageError(f"training.parent_run: {t.parent_run} {why}; a child continues a finished run's saved "
                         f"adapter -- wait until it completes (or resume it: python -m tuning train --resume "
                         f"--output {t.parent_run}), or {PARENT_FIX}")
    parent = ParentRun(run=run, base=run.base_model(), adapter_sha256=fingerprint_adapter(run.adapter_dir))
    _check_same_base(recipe, parent)
    return parent


def _model_name(name: str) -> str:
    """The model a recipe's name means here ('auto' resolved, a folder by its full path), without loading it."""
    if name == AUTO_MODEL:
        from tuning.models.loading import default_model_name

        name = default_model_name()
    folder = Path(name).expanduser()
    return str(folder.resolve()) if name != EMBEDDED_MODEL and folder.is_dir() else name


def _check_same_base(recipe: RecipeConfig, parent: ParentRun) -> None:
    wanted, trained = _model_name(recipe.model.name), _model_name(parent.base.name)
    pinned = parent.base.revision
    revision = recipe.model.revision
    if wanted != trained or (revision and pinned and revision != pinned):
        mine = recipe.model.name + (f"@{revision}" if revision else "")
        theirs = parent.base.name + (f"@{pinned}" if pinned else "")
        raise UsageError(f"training.parent_run: {parent.run.id} was trained on {theirs}, this recipe's model is "
                         f"{mine}; an adapter only fits the base model it was trained on -- set "
                         f"--set model.name={parent.base.name}"
                         + (f" --set model.revision={pinned}" if pinned else "")
                         + f", or {PARENT_FIX} trained on {recipe.model.name}")


def check_resolved_base(parent: ParentRun, model_ref) -> None:
    """UsageError when the resolved base model is another commit than the parent's (checked before it loads)."""
    pinned = parent.base.revision
    if pinned and model_ref.revision and model_ref.revision != pinned:
        raise UsageError(f"training.parent_run: {parent.run.id} was trained on {parent.base.name} at commit {pinned}, "
                         f"which resolved to {model_ref.revision} here -- set --set model.revision={pinned}")


def inherit_from_parent(recipe: RecipeConfig, parent: ParentRun) -> RecipeConfig:
    """The recipe as the child trains it: the parent's base model (at its commit) and LoRA shape, which its adapter
    fixes; a child lora section that differs is overridden, and the log says so."""
    parent_lora = parent.run.recipe().lora
    shape = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(parent_lora).items())
    if recipe.lora in (parent_lora, LoraConfig()):  # the same, or a recipe that left the section out
        log.info("LoRA shape: %s's adapter (%s)", parent.run.id, shape)
    else:
        log.warning("lora section ignored: this run trains %s's adapter, so its shape is the parent's (%s)",
                    parent.run.id, shape)
    model = dataclasses.replace(recipe.model, name=parent.base.name,
                                revision=recipe.model.revision or parent.base.revision)
    return dataclasses.replace(recipe, model=model, lora=parent_lora)


def write_lineage(run_dir: Path, recipe: RecipeConfig, parent: ParentRun) -> None:
    """RUN/lineage.json: the method and the parent (id, path, adapter digest, base model) this run continued."""
    write_json(run_dir / LINEAGE_FILE, {"method": recipe.training.method, "parent": parent.record(),
                                        "lora": dataclasses.asdict(recipe.lora)})


def replay_rows(parent: ParentRun, count: int, seed: int, corrected: list[str]) -> list[dict]:
    """A seeded sample of `count` rows of the parent's training data (file order kept), leaving out questions the
    new rows answer afresh: replaying the old answer beside its correction would teach both."""
    from tuning.data.examples import fold_text, read_jsonl, user_prompts

    if count <= 0:
        return []
    asked = {fold_text(prompt) for prompt in corrected}
    rows = read_jsonl(parent.run.train_file)
    rows = [row for row, prompt in zip(rows, user_prompts(rows), strict=True) if fold_text(prompt) not in asked]
    if count >= len(rows):
        log.info("training.replay=%d: the parent has %d rows to replay, all of them mixed in", count, len(rows))
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), count))
    return [rows[index] for index in picked]


def parent_validation_rows(parent: ParentRun) -> list[dict]:
    """The parent's held-out rows: a child without data.validation is scored on the same questions."""
    from tuning.data.examples import read_jsonl

    return read_jsonl(parent.run.validation_file) if parent.run.validation_file.is_file() else []


def copy_parent_data(parent: ParentRun, run_dir: Path, sources: bool = True) -> None:
    """Copy the parent's data/train.jsonl, validation.jsonl and (sources) sources/ into the child (a DPO run's own
    rows are preferences): the scorecard and its probes read those files, so they run on a child unchanged."""
    source, target = parent.run.path / RUN_DATA_DIR, run_dir / RUN_DATA_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in (RUN_TRAIN_FILE, RUN_VALIDATION_FILE):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    if sources and (source / RUN_SOURCES_DIR).is_dir():
        shutil.copytree(source / RUN_SOURCES_DIR, target / RUN_SOURCES_DIR, dirs_exist_ok=True)
