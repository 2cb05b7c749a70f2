"""What a model costs the app process's memory: giving it back when a model is dropped, and sizing the
models a visitor picks (a Hub adapter's base, the local QA-generation model) before their weights load.

A model held by the app (chat, QA generation) shares the machine with the training process; on a Space's
one GPU every gigabyte it keeps is one the next run can't have.
"""

from __future__ import annotations

import gc
from pathlib import Path

from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, ModelConfig
from tuning.guards.caps import CAP_ENV_PREFIX, CapError, caps, check_cap
from tuning.models.loading import ModelTooLargeError, is_app_chosen

PARAMS_CAP_FIX = "pick a smaller model (parameters are counted from its config.json before anything loads)"


def free_memory() -> None:
    """Give back the memory of models nothing refers to any more: a model may sit in reference cycles (a hook
    that refers back to it, a Trainer with its optimizer and callbacks), which `del` alone leaves for the
    collector's next pass, and PyTorch keeps freed GPU blocks cached for this process until empty_cache()."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def count_parameters(model_dir: Path) -> int | None:
    """The model's parameter count, from its config.json alone (a model built on the meta device: no weight is
    read or allocated); None when its config names no architecture transformers can build."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):  # (accelerate's init_empty_weights unties tied embeddings: counted twice)
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 -- whatever a config provokes: the loader that follows says what is wrong with the folder
        return None
    return sum(parameter.numel() for parameter in skeleton.parameters())  # tied weights are counted once


def check_model_params(name: str, model_dir: Path) -> None:
    """ModelTooLargeError (a CapError and a ModelLoadError) when the model `name` (its files in model_dir) has
    more parameters than caps().model_params; the message names the cap's setting. The owner's picks ('auto',
    'embedded', KANTELE_DEFAULT_MODEL, the GPU default) are theirs to size, as for caps().model_gb."""
    cap = caps().model_params
    if cap is None or name in (AUTO_MODEL, EMBEDDED_MODEL) or is_app_chosen(name):
        return
    count = count_parameters(model_dir)
    if count is None:
        return
    try:
        check_cap(count, cap, f"the parameter count of '{name}'",
                  f"{PARAMS_CAP_FIX}, or ask whoever runs the app to raise {CAP_ENV_PREFIX}MODEL_PARAMS")
    except CapError as exc:
        raise ModelTooLargeError(str(exc)) from None


def chosen_model_config(name: str) -> ModelConfig:
    """How a model a visitor picked loads in the app process: 4-bit NF4 on a GPU (the GPU is shared with
    training), full precision on a CPU (4-bit would only cost quality and speed there)."""
    import torch

    return ModelConfig(name=name, load_in_4bit=torch.cuda.is_available())
