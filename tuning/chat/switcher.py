"""Keep one base model in memory for the whole app and swap adapters on it.

Picking another run of the same base model only swaps the small LoRA adapter; a run of a
different base model (or precision) replaces the base. A Hub adapter id is fetched once.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from tuning.chat.side_by_side import SideBySideChat
from tuning.config import ModelConfig, RecipeConfig
from tuning.guards.caps import MAX_NAME_CHARS, caps
from tuning.hub.auth import download_token
from tuning.hub.size import pin_under_cap, snapshot
from tuning.models.loading import ModelLoadError, resolve_model
from tuning.models.memory import check_model_params, chosen_model_config, free_memory
from tuning.models.names import ModelNameError, base_model_of, is_hub_id
from tuning.runs.run import Run

HUB_ADAPTER_PATTERNS = ["adapter_config.json", "*.safetensors", "*.json"]
ADAPTER_SIZE_FIX = "pick a smaller adapter (a LoRA adapter is a few MB to a few hundred), or pick a local run"


def fetch_hub_adapter(repo_id: str) -> tuple[Path, str]:
    """Download a LoRA adapter from the Hub; returns its folder and its base model, checked for this app
    (on a shared app an adapter may not name a local folder as its base: tuning.models.names). Where
    caps().adapter_mb is set, its files are measured first: CapError when they are over it."""
    import json

    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if not is_hub_id(repo_id):  # checked before the Hub cache on disk is looked at; a long id is not quoted whole
        raise ModelLoadError(f"'{repo_id[:MAX_NAME_CHARS]}' is not an adapter on the Hub -- check the id (owner/name)")
    token = download_token(repo_id)
    try:
        pinned = pin_under_cap(repo_id, None, HUB_ADAPTER_PATTERNS, token, caps().adapter_mb, "MB", ADAPTER_SIZE_FIX)
        folder = Path(snapshot(repo_id, pinned, allow_patterns=HUB_ADAPTER_PATTERNS, token=token))
    except (RepositoryNotFoundError, HFValidationError):
        raise ModelLoadError(f"'{repo_id}' is not an adapter on the Hub -- check the id (owner/name)") from None
    except (LocalEntryNotFoundError, OSError) as exc:
        raise ModelLoadError(f"can't download '{repo_id}': {why_not_downloaded(exc)}") from None
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise ModelLoadError(f"'{repo_id}' has no adapter_config.json -- it is not a PEFT LoRA adapter")
    try:
        recorded = json.loads(config.read_text())["base_model_name_or_path"]
    except (ValueError, KeyError, TypeError):
        raise ModelLoadError(f"'{repo_id}' has a damaged {config.name}: no base_model_name_or_path -- it is not a "
                             "PEFT LoRA adapter") from None
    if not isinstance(recorded, str):
        raise ModelLoadError(f"'{repo_id}': base_model_name_or_path is not a model name -- fix its {config.name}")
    try:
        return folder, base_model_of(recorded)
    except ModelNameError as exc:
        raise ModelLoadError(f"the base model of '{repo_id}' ({config.name}): {exc}") from None


def why_not_downloaded(exc: BaseException) -> str:
    """Why the Hub gave nothing (offline mode, no answer, an HTTP error) and what to do instead."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    cause = exc.__cause__ or exc  # huggingface_hub raises "not in the cache" from the real reason
    if constants.HF_HUB_OFFLINE or isinstance(cause, OfflineModeIsEnabled):
        return ("HF_HUB_OFFLINE is set and it isn't in the local cache -- unset HF_HUB_OFFLINE where the Hub is "
                "reachable, or pick a local run")
    status = getattr(getattr(cause, "response", None), "status_code", None)
    answer = f"answered HTTP {status}" if status else f"did not answer ({type(cause).__name__})"
    return (f"can't reach the Hub at {constants.ENDPOINT}: it {answer} -- check the network and try again, "
            "or pick a local run")


class ChatSwitcher:
    """The app's one chat model: base weights loaded once, adapters switched on request."""

    def __init__(self) -> None:
        self._chat: SideBySideChat | None = None
        self._key: tuple | None = None  # (base model name, 4-bit, system prompt)
        self._lock = threading.Lock()

    def _ensure_base(self, name: str, model_cfg: ModelConfig, system_prompt: str | None,
                     chosen: bool = False) -> SideBySideChat:
        """The chat on base `name`, loading it (in place of the current one) unless it is the one loaded;
        chosen: a model a visitor picked, refused when over caps().model_params before its weights load."""
        key = (name, model_cfg.load_in_4bit, system_prompt)
        if self._chat is None or self._key != key:
            model = resolve_model(name, model_cfg.revision)
            if chosen:
                check_model_params(name, model.path)  # the current model stays when this one is refused
            self._drop_chat()  # the old base's memory is given back before the new one loads
            self._chat = SideBySideChat(model, model_cfg, system_prompt)
            self._key = key
        return self._chat

    def _drop_chat(self) -> None:
        loaded, self._chat, self._key = self._chat is not None, None, None
        if loaded:
            free_memory()

    def select_run(self, run_dir: str | Path) -> tuple[SideBySideChat, Path]:
        """The chat for a finished run's adapter (on the base it was trained on) and that adapter's folder."""
        run = Run(run_dir)
        if not run.has_adapter():
            raise ModelLoadError(f"run {run.id} has no adapter yet -- wait for it to finish")
        recipe, base = run.recipe(), run.base_model()  # the base it trained on, even where 'auto' now differs
        model_cfg = dataclasses.replace(recipe.model, name=base.name, revision=base.revision)
        with self._lock:
            chat = self._ensure_base(base.name, model_cfg, recipe.data.system_prompt)
            chat.use_adapter(run.adapter_dir, label=run.id)  # no-op when already attached
            return chat, run.adapter_dir

    def select_hub_adapter(self, repo_id: str) -> tuple[SideBySideChat, Path]:
        """The chat for an adapter from the Hub (on its own base model) and the adapter's folder."""
        repo_id = repo_id.strip()
        folder, base = fetch_hub_adapter(repo_id)  # base: checked for this app before any model is loaded
        with self._lock:
            chat = self._ensure_base(base, chosen_model_config(base), None, chosen=True)
            chat.use_adapter(folder, label=repo_id)  # no-op when already attached
            return chat, folder

    def select_base(self, recipe: RecipeConfig | None = None) -> tuple[SideBySideChat, None]:
        """No adapter: the current base model (the default one if nothing is loaded)."""
        with self._lock:
            if self._chat is None:
                recipe = recipe or RecipeConfig()
                self._ensure_base(recipe.model.name, recipe.model, recipe.data.system_prompt)
            return self._chat, None

    def release(self) -> None:
        """Drop the model and give its memory back (before a training run that needs it)."""
        with self._lock:
            self._drop_chat()
