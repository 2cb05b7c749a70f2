"""The app's shared pieces: the training queue, the one chat model, folders, the default tokenizer."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from tuning.chat.switcher import ChatSwitcher
from tuning.runs.queue import TrainingQueue
from tuning.runs.visitor_runs import VisitorRuns
from tuning.training.estimate import estimate_seconds_for_run

APP_DATA = Path(os.environ.get("KANTELE_HOME", ".")).resolve()
RUNS_DIR = APP_DATA / "runs"
WORKSPACES_DIR = APP_DATA / "workspaces"  # one private folder per browser session
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

# The UI reaches runs only through RUNS, which checks every run id against who asks (tests/guards/test_isolation.py).
RUNS = VisitorRuns(TrainingQueue(RUNS_DIR, estimate_seconds=estimate_seconds_for_run))
CHAT = ChatSwitcher()


@functools.lru_cache(maxsize=4)
def tokenizer_for(model_name: str = "auto"):
    """A model's tokenizer, loaded once (token counts for the Data tab and estimates)."""
    from tuning.models.loading import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(model_name).path)


def count_tokens_with(model_name: str = "auto"):
    """A function counting a conversation's tokens with the model's chat template."""
    from tuning.data.chat_template import count_tokens

    tokenizer = tokenizer_for(model_name)
    return lambda messages: count_tokens(tokenizer, messages)


def feedback_workspace(owner) -> Path:
    """The folder an owner's chat feedback is kept in (tuning/feedback/store.py): theirs alone, found again after a
    reload (it is named by the owner's digest, like their runs), and swept with the other workspaces once idle."""
    return WORKSPACES_DIR / f"feedback-{owner.digest()}"
