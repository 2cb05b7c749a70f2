"""What may name a base model: a name's shape everywhere, and on a shared app only what can't reach its disk.

On your own machine a model is a Hub id, a local folder, 'embedded' or 'auto'. On a shared app a visitor
who could name a folder could load another visitor's exported model, or probe which folders exist from
the errors; there a model is a Hub id, 'embedded' or 'auto' only (the owner's KANTELE_DEFAULT_MODEL, which
'auto' means, may still be a folder). Every check here runs before anything touches the disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from tuning.config import AUTO_MODEL, EMBEDDED_MODEL, ConfigError
from tuning.guards.caps import MAX_NAME_CHARS, is_shared

EMBEDDED_CACHE_FOLDER = "smollm2-135m-instruct"  # the embedded model's converted copy: <cache>/models/<this>
HUB_CACHE_PREFIX = "models--"  # the Hub cache's folder for owner/name is models--owner--name
# One answer for every name a shared app refuses: it never quotes the name, nor says whether such a folder exists.
MODEL_REFUSED = ("this shared app loads base models from the Hugging Face Hub only -- name one by its Hub id "
                 "(owner/name, e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0), or 'embedded' or 'auto'; to use your "
                 "own weights, push them to the Hub first")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A git ref or commit: what the Hub takes as a revision ('..' and a leading '/' are never part of one).
_REVISION = re.compile(r"^(?!/)(?!.*\.\.)[\w.\-/]+$")


class ModelNameError(ConfigError):
    """A model name (or revision) that is not one, or that this app doesn't load; the message names the fix."""


def _not_a_name(name: str) -> bool:
    return len(name) > MAX_NAME_CHARS or bool(_CONTROL.search(name))


def _check_shape(name: str) -> None:
    """ModelNameError for text no model is called: too long, or holding control characters."""
    if not _not_a_name(name):
        return
    if is_shared():
        raise ModelNameError(MODEL_REFUSED)
    control = ", with control characters" if _CONTROL.search(name) else ""
    raise ModelNameError(f"that is not a model name ({len(name):,} characters{control}) -- a model is a Hub id "
                         f"(owner/name), a folder path or 'embedded', at most {MAX_NAME_CHARS} characters")


def is_hub_id(name: str) -> bool:
    """True when name has the shape of a Hub repo id (owner/name or name), by huggingface_hub's own rule."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_model_name(name: str | None) -> str:
    """The name, stripped ('auto' when empty), once it may be loaded here; ModelNameError naming the fix if not."""
    name = (name or "").strip() or AUTO_MODEL
    _check_shape(name)
    if is_shared() and name not in (AUTO_MODEL, EMBEDDED_MODEL) and not is_hub_id(name):
        raise ModelNameError(MODEL_REFUSED)
    return name


def check_revision(revision: str | None) -> str | None:
    """The revision (None: the default branch) once it is a branch, tag or commit; ModelNameError if not."""
    if revision is None or not str(revision).strip():
        return None
    revision = str(revision).strip()
    if len(revision) > MAX_NAME_CHARS or not _REVISION.match(revision):
        raise ModelNameError("model.revision is not a branch, tag or commit -- use a name like 'main' or a "
                             "commit hash, or leave it empty")
    return revision


def portable_base_name(name: str) -> str:
    """A base model as the training machine wrote it, as this machine can name it.

    A cache path from the other machine means the same model here: the embedded model's converted
    folder is 'embedded', a Hub cache snapshot (.../models--owner--name/snapshots/REV) is owner/name.
    Only your own machine looks on its disk first (a shared app maps the text alone)."""
    name = name.strip()
    _check_shape(name)
    path = Path(name)
    if not is_shared() and path.is_dir():
        return str(path)
    if path.name == EMBEDDED_CACHE_FOLDER and path.parent.name == "models":
        return EMBEDDED_MODEL
    for part in path.parts:
        if part.startswith(HUB_CACHE_PREFIX) and part.count("--") >= 2:
            return part[len(HUB_CACHE_PREFIX):].replace("--", "/", 1)
    return name


def base_model_of(recorded: str) -> str:
    """The base model an adapter records (adapter_config.json's base_model_name_or_path), checked for this app."""
    return check_model_name(portable_base_name(recorded))
