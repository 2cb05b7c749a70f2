"""'Train again with my corrections': a recipe for a child of a finished run that learns from a visitor's chat
feedback -- an SFT top-up on the corrections with a replay sample of the parent's rows, or DPO on the preference
pairs the votes and corrections make.

The child is the parent's recipe (its base model, system prompt, LoRA shape, scorecard settings) with the method's
training settings below; it is scored on the parent's held-out questions, so its scorecard reads as "after the
corrections" beside the parent's.
"""

from __future__ import annotations

import copy
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tuning.config import DPO, SFT, RecipeConfig
from tuning.errors import UsageError
from tuning.feedback.convert import correction_rows, preference_rows, write_training_files
from tuning.feedback.store import list_feedback
from tuning.runs.run import Run

METHODS = (SFT, DPO)
SNAPSHOTS_DIR = "queued"  # beside the feedback: the rows each queued run trains on, as they were when it was asked
# SFT top-up: each correction is trained beside this many of the parent's own rows (at least REPLAY_MIN), so the
# update is about the corrections without overwriting what the parent knew (tuning.training.parent.replay_rows).
REPLAY_PER_CORRECTION = 6
REPLAY_MIN = 24
# Measured on the Kalevala CPU run (bench/feedback_loop.py: 5 held-out questions it got wrong, corrected): at the
# parent's own rate (2e-3) for 4 epochs the top-up got 3 of the 5 right but held-out key facts fell 74.1% -> 41.4%;
# at 2e-4 for 8 epochs, 4 of the 5 and 77.6%, general skills kept 8 of 29 (the parent: 4).
TOPUP_LEARNING_RATE = 2e-4  # at most: a parent that trained slower keeps its own rate
TOPUP_EPOCHS = 8.0
# DPO: configs/kalevala-dpo.yaml's settings with more passes, since chat feedback is a few pairs rather than a file
# of them. The same 5 corrections (bench/feedback_loop.py): at 5e-5, 2 of the 5 right, held-out key facts 74.1% ->
# 74.1%, 41 of the other 53 (the parent: 43); at 2e-4, 4 of the 5, 74.1%, 39 of the other 53.
DPO_EPOCHS = 8.0
DPO_LEARNING_RATE = 2e-4
DPO_BATCH = 4
NO_CORRECTIONS = ("no corrections yet -- press \"Correct the answer\" under an answer in Chat and save the answer it "
                  "should have given (votes alone train with DPO)")
NO_PAIRS = ("no preference pairs yet -- vote \"Left better\" or \"Right better\" under two different answers in Chat, "
            "or correct an answer")


@dataclass(frozen=True)
class FeedbackCounts:
    """What a visitor's feedback gives each method to train on."""

    items: int
    corrections: int
    pairs: int

    def summary(self) -> str:
        return (f"{self.items} feedback item{'s' * (self.items != 1)}: {self.corrections} correction"
                f"{'s' * (self.corrections != 1)} (SFT rows), {self.pairs} preference pair{'s' * (self.pairs != 1)} "
                "(DPO)")


def feedback_counts(workspace: Path) -> FeedbackCounts:
    """How many items the workspace keeps, and the SFT rows and preference pairs they make."""
    items = list_feedback(workspace)
    return FeedbackCounts(len(items), len(correction_rows(items)), len(preference_rows(items)))


def retrain_recipe(parent_dir: Path, workspace: Path, method: str) -> RecipeConfig:
    """The recipe of a child of `parent_dir` trained on the workspace's feedback by `method` (sft: corrections plus a
    replay sample; dpo: preference pairs). UsageError naming the fix when the feedback has nothing for that method;
    the parent itself is checked when the run starts (tuning.training.parent.check_parent)."""
    if method not in METHODS:
        raise UsageError(f"method {str(method)[:20]!r} is not one of {', '.join(METHODS)}")
    corrections, preferences = write_training_files(workspace)
    parent = Run(Path(parent_dir))
    recipe = copy.deepcopy(parent.recipe())
    t = recipe.training
    t.method, t.parent_run, t.max_steps, t.warmup_ratio = method, str(parent.path.resolve()), -1, 0.0
    recipe.data.validation, recipe.data.sources = [], []  # scored on the parent's held-out rows, sources copied
    if method == SFT:
        if corrections is None:
            raise UsageError(NO_CORRECTIONS)
        rows = feedback_counts(workspace).corrections
        recipe.data.train = [str(_snapshot(corrections))]
        t.replay, t.epochs = max(REPLAY_MIN, REPLAY_PER_CORRECTION * rows), TOPUP_EPOCHS
        t.learning_rate = min(t.learning_rate, TOPUP_LEARNING_RATE)
    else:
        if preferences is None:
            raise UsageError(NO_PAIRS)
        recipe.data.train = [str(_snapshot(preferences))]
        t.replay, t.epochs, t.learning_rate, t.batch_size, t.grad_accum = 0, DPO_EPOCHS, DPO_LEARNING_RATE, DPO_BATCH, 1
        t.lr_scheduler = "constant"
    t.logging_steps = 1  # a short run: every step is a point on its curves
    return recipe


def _snapshot(path: Path) -> Path:
    """A copy of a training file for one run to read when it starts: the queue may start it after the visitor has
    deleted feedback (which removes the files made from it) or given more."""
    kept = path.parent / SNAPSHOTS_DIR / f"{uuid.uuid4().hex[:12]}-{path.name}"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, kept)
    return kept
