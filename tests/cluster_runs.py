"""Run folders and adapters for the cluster tests, made without training (plain module, shared by test files)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from helpers import FEW_STEPS, REPO, TINY_TRAIN, TINY_VALIDATION, write_jsonl

from tuning.config import apply_overrides, load_recipe, save_recipe
from tuning.runs.files import CONFIG_FILE, RUN_DATA_DIR, RUN_TRAIN_FILE, RUN_VALIDATION_FILE

# What makes the bundled recipe a seconds-long CPU run (the train.sh and sbatch tests pass these on).
QUICK_RUN = ["--set", "training.max_steps=2", "--set", "training.scorecard=false", "--set", "training.save_steps=2"]


def make_run_folder(run_dir: Path) -> Path:
    """A run folder as the trainer leaves it before the first step: resolved config.yaml and the data it used."""
    write_jsonl(_mkdir(run_dir / RUN_DATA_DIR) / RUN_TRAIN_FILE, TINY_TRAIN)
    write_jsonl(run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE, TINY_VALIDATION)
    recipe = apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"), FEW_STEPS)
    recipe.data.train, recipe.data.validation = ["/somewhere/only/here/train.jsonl"], ["/somewhere/val.jsonl"]
    save_recipe(recipe, run_dir / CONFIG_FILE)
    return run_dir


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def lora_adapter(folder: Path, base: str = "embedded-cache", **config) -> Path:
    """A small but real LoRA adapter folder (safetensors + adapter_config.json) for the embedded model's shapes."""
    import numpy as np
    from safetensors.numpy import save_file

    from tuning.models.loading import embedded_model_dir

    folder.mkdir(parents=True, exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    hidden = json.loads((embedded_model_dir() / "config.json").read_text())["hidden_size"]
    save_file({f"{prefix}.lora_A.weight": np.zeros((4, hidden), np.float32),
               f"{prefix}.lora_B.weight": np.zeros((hidden, 4), np.float32)}, str(folder / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                "target_modules": ["q_proj"],
                "base_model_name_or_path": str(embedded_model_dir()) if base == "embedded-cache" else base}
    (folder / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    return folder


def zip_folder(folder: Path, out: Path, inside: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """Zip a folder's files under `inside/` (default: the folder's name), plus extra raw entries."""
    inside = folder.name if inside is None else inside
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "checkpoints" not in path.relative_to(folder).parts:
                archive.write(path, f"{inside}/{path.relative_to(folder).as_posix()}".lstrip("/"))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out
