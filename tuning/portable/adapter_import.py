"""Bring a LoRA adapter trained elsewhere (a cluster, another machine) back in as a finished run.

Takes a zip -- of an adapter folder, or of a whole run folder -- or a folder, checks it the way an
upload on a shared Space must be checked (no paths out of the folder, no pickled weights, a size cap,
a base model this machine can load), and writes a completed run folder that Chat, the scorecard and
Publish use like any other. The run appears whole or not at all (staged, then renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuning.atomic import staged_dir
from tuning.config import AUTO_MODEL, ConfigError, RecipeConfig, load_recipe, save_recipe
from tuning.data.files import DataError, UploadLimits, upload_limits
from tuning.errors import KanteleError
from tuning.models.names import (
    ModelNameError,
    base_model_of,
    check_revision,
    portable_base_name,  # noqa: F401 (its old home: imports from here keep working)
)
from tuning.portable.archive import ArchiveError, check_folder, skipped, unpack_zip
from tuning.runs.files import (
    ADAPTER_DIR,
    CARD_FILE,
    CHECKPOINTS_DIR,
    COMPLETED,
    CONFIG_FILE,
    DATA_FILE,
    ENVIRONMENT_FILE,
    EVAL_CSV_FILE,
    EVAL_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUN_DATA_DIR,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
    STATUS_FILE,
    read_json,
    write_status,
)
from tuning.runs.owner import Owner, record_owner
from tuning.runs.run import Run
from tuning.training.curves import LEARNING_RATE_PNG, LOSS_PNG

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# torch.load of these runs code from the file: on a shared Space one visitor's upload would run on the server.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# What of an adapter folder is kept: its config and weights, and the tokenizer saved beside them.
ADAPTER_KEEP_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model", ".md")
# What of a run folder is kept; status and owner are the importer's to write, checkpoints are not needed.
RUN_KEEP_FILES = (METRICS_FILE, EVAL_FILE, EVAL_CSV_FILE, DATA_FILE, ENVIRONMENT_FILE, LOG_FILE, CARD_FILE,
                  LOSS_PNG, LEARNING_RATE_PNG, f"{RUN_DATA_DIR}/{RUN_TRAIN_FILE}",
                  f"{RUN_DATA_DIR}/{RUN_VALIDATION_FILE}")
IGNORED_FOLDERS = (CHECKPOINTS_DIR, "__MACOSX")  # resume state (pickles, and large), and macOS zip litter
HOW_TO_ZIP = ("zip the run folder (without checkpoints/) or the adapter folder: adapter_config.json + "
              "adapter_model.safetensors")


class AdapterImportError(KanteleError, ValueError):
    """An upload that can't become a run; the message names the file or field and the fix."""


@dataclass
class ImportedRun:
    """The run an import made, and what the person should know about it."""

    run_id: str
    run_dir: Path
    base_model: str
    notes: list[str] = field(default_factory=list)


def import_adapter(source: str | os.PathLike, runs_dir: str | os.PathLike, owner: Owner | None = None,
                   limits: UploadLimits | None = None) -> ImportedRun:
    """Check a zip or folder holding an adapter (or a whole run) and add it to runs_dir as a completed run."""
    from tuning.runs.queue import make_run_id

    source, runs_dir = Path(source), Path(runs_dir)
    limits = limits or _limits()
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Unpacked beside the runs (a dotted name: never listed as a run), so the final rename stays on one disk.
    with tempfile.TemporaryDirectory(dir=runs_dir, prefix=".import-") as scratch:
        root = _unpacked(source, Path(scratch), limits)
        adapter = find_adapter(root, source.name)
        adapter_config = read_adapter_config(adapter / ADAPTER_CONFIG)
        check_weights(adapter)
        run_root = adapter.parent if adapter.name == ADAPTER_DIR and (adapter.parent / CONFIG_FILE).is_file() else None
        recipe, where = _recipe(run_root, adapter_config)
        _check_base_model(recipe, where)
        run_id = make_run_id(f"{_stem(source)}-imported")
        with staged_dir(runs_dir / run_id) as staging:
            _copy_adapter(adapter, staging / ADAPTER_DIR)
            if run_root is not None:
                _copy_run_files(run_root, staging)
            save_recipe(recipe, staging / CONFIG_FILE, header=f"imported from {source.name}; {where}")
            status = read_json(run_root / STATUS_FILE, {}) if run_root else {}
            steps = {key: status[key] for key in ("step", "total_steps") if isinstance(status.get(key), int)}
            write_status(staging, COMPLETED, pid=None, imported_from=source.name, imported=time.time(), **steps)
            if owner is not None:
                record_owner(staging, owner)
    notes = [] if run_root else [f"a bare adapter: the recipe was rebuilt from {ADAPTER_CONFIG}; no metrics "
                                 "or scorecard came with it"]
    return ImportedRun(run_id, runs_dir / run_id, recipe.model.name, notes)


def _limits() -> UploadLimits:
    try:
        return upload_limits()
    except DataError as exc:
        raise AdapterImportError(str(exc)) from None


def _unpacked(source: Path, scratch: Path, limits: UploadLimits) -> Path:
    """The upload as a folder: a zip unpacked into scratch, or the folder itself; checkpoints/ left out."""
    hint = "leave out checkpoints/ (only the adapter and the run's small files are imported)"
    try:
        if source.is_file():
            return unpack_zip(source, scratch, limits, IGNORED_FOLDERS, hint)
        return check_folder(source, limits, IGNORED_FOLDERS, hint)
    except ArchiveError as exc:
        raise AdapterImportError(str(exc)) from None


def _stem(source: Path) -> str:
    return source.name[: -len(".zip")] if source.name.lower().endswith(".zip") else source.name


def find_adapter(root: Path, shown: str) -> Path:
    """The one adapter folder in an upload (the shallowest adapter_config.json outside checkpoints/)."""
    found = [p.parent for p in root.rglob(ADAPTER_CONFIG) if not skipped(p.relative_to(root).as_posix(), IGNORED_FOLDERS)]
    if not found:
        raise AdapterImportError(f"{shown}: no {ADAPTER_CONFIG} in it -- {HOW_TO_ZIP}")
    depth = min(len(p.parts) for p in found)
    shallowest = [p for p in found if len(p.parts) == depth]
    if len(shallowest) > 1:
        names = ", ".join(sorted(p.relative_to(root).as_posix() for p in shallowest))
        raise AdapterImportError(f"{shown}: several adapters side by side ({names}) -- zip one of them")
    return shallowest[0]


def read_adapter_config(path: Path) -> dict:
    """adapter_config.json, checked for what an import needs: a LoRA adapter naming its base model."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterImportError(f"{ADAPTER_CONFIG} can't be read ({exc}) -- save the adapter again with "
                                 "PEFT's save_pretrained") from None
    if not isinstance(config, dict):
        raise AdapterImportError(f"{ADAPTER_CONFIG}: expected a JSON object -- save the adapter again with "
                                 "PEFT's save_pretrained")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterImportError(f"{ADAPTER_CONFIG}: peft_type is {config.get('peft_type')!r} -- only LoRA "
                                 "adapters can be imported")
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise AdapterImportError(f"{ADAPTER_CONFIG}: base_model_name_or_path is missing -- set it to the base "
                                 "model's Hub id (e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0)")
    return config


def check_weights(adapter: Path) -> None:
    """The weights must be adapter_model.safetensors, readable; pickled weights are refused outright."""
    pickled = sorted(p.name for p in adapter.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise AdapterImportError(
            f"{pickled[0]}: pickled weights are refused (loading them can run any code on this server) -- "
            f"save the adapter with save_pretrained(..., safe_serialization=True) to get {ADAPTER_WEIGHTS}")
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise AdapterImportError(f"{ADAPTER_WEIGHTS} is missing beside {ADAPTER_CONFIG} -- {HOW_TO_ZIP}")
    try:
        from safetensors import safe_open

        with safe_open(weights, framework="numpy") as opened:  # reads the header only: cheap
            tensors = list(opened.keys())
    except Exception as exc:  # noqa: BLE001 -- safetensors raises its own error type for a damaged file
        raise AdapterImportError(f"{ADAPTER_WEIGHTS} can't be read ({exc}) -- the file is cut short or not "
                                 "safetensors; zip the adapter folder again") from None
    if not tensors:
        raise AdapterImportError(f"{ADAPTER_WEIGHTS} holds no tensors -- zip the adapter folder of a finished run")


def _recipe(run_root: Path | None, adapter_config: dict) -> tuple[RecipeConfig, str]:
    """The run's own recipe when the upload is a run folder, else one rebuilt from adapter_config.json."""
    if run_root is not None:
        try:
            recipe = load_recipe(run_root / CONFIG_FILE)
        except ConfigError as exc:
            raise AdapterImportError(f"the run's {exc} -- fix {CONFIG_FILE} or zip the adapter folder alone") from None
        if recipe.model.name == AUTO_MODEL:  # 'auto' here may be another model than it was there
            used = Run(run_root).recorded_base_model().get("name")
            recorded = isinstance(used, str) and used.strip()
            recipe.model.name = used if recorded else adapter_config["base_model_name_or_path"]
        return recipe, f"{CONFIG_FILE}'s model.name"
    recipe = RecipeConfig()
    recipe.model.name = adapter_config["base_model_name_or_path"]  # made portable by _check_base_model
    recipe.model.revision = adapter_config.get("revision") or None
    # Nothing says whether it trained on a 4-bit base: load the base as saved, as for a Hub adapter.
    recipe.model.load_in_4bit = False
    lora = recipe.lora
    for key, attribute, kind in (("r", "r", int), ("lora_alpha", "alpha", int), ("lora_dropout", "dropout", float)):
        value = adapter_config.get(key, getattr(lora, attribute))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AdapterImportError(f"{ADAPTER_CONFIG}: {key} should be a number, got {value!r} -- save the "
                                     "adapter again with PEFT's save_pretrained")
        setattr(lora, attribute, kind(value))
    targets = adapter_config.get("target_modules")
    if isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        lora.target_modules = sorted(targets) if isinstance(targets, list) else targets
    return recipe, f"{ADAPTER_CONFIG}'s base_model_name_or_path"


def _check_base_model(recipe: RecipeConfig, where: str) -> None:
    """The base model must be one this app may load (checked before the disk is looked at) and load here,
    or the run would only fail later, in Chat."""
    from tuning.models.loading import ModelLoadError, resolve_model

    try:
        recipe.model.name = base_model_of(recipe.model.name)
        recipe.model.revision = check_revision(recipe.model.revision)
    except ModelNameError as exc:
        raise AdapterImportError(f"the base model ({where}): {exc}") from None
    try:
        resolve_model(recipe.model.name, recipe.model.revision)
    except ModelLoadError as exc:
        raise AdapterImportError(f"the base model '{recipe.model.name}' ({where}) can't be found here: {exc}") from None


def _copy_adapter(adapter: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for path in sorted(adapter.iterdir()):
        if path.is_file() and path.suffix.lower() in ADAPTER_KEEP_SUFFIXES:
            shutil.copyfile(path, target / path.name)


def _copy_run_files(run_root: Path, target: Path) -> None:
    """The run's metrics, scorecard, log, card and data rows (when it has them)."""
    for name in RUN_KEEP_FILES:
        path = run_root / name
        if path.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / name)
