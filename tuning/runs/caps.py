"""What one training run may cost: its recipe and its pre-flight estimate checked against caps() before it is
queued. One slot trains for everyone on a shared app, so a run sized for a week would hold it for a week.

On your own machine no cap is set (unless the owner sets KANTELE_CAP_*), and nothing here loads a model.
"""

from __future__ import annotations

import math
from pathlib import Path

from tuning.config import RecipeConfig
from tuning.guards.caps import CapError, Caps, caps, check_cap
from tuning.training.estimate import Estimate, estimate_recipe

STEPS_FIX = "lower max steps, or set it to -1 and let the epochs decide"
EPOCHS_FIX = "lower the epochs (or set max steps)"
BATCH_FIX = "lower the batch size; grad accumulation gives the same effective batch"
LENGTH_FIX = "lower max length; longer conversations are cut to it"
PLANNED_STEPS_FIX = "lower the epochs, raise the batch size, or set max steps"
MINUTES_FIX = "fewer steps or epochs, a shorter max length, or a smaller model (or train on your own machine)"
RANK_FIX = "lower the LoRA rank (4-32 is the usual trade-off; a higher rank mostly makes a bigger adapter)"
SCORECARD_FIX = "set scorecard questions to {cap:,} or fewer: a seeded sample of the held-out questions"


def _finite(value: float, what: str) -> None:
    if not math.isfinite(value):  # NaN compares as under any cap
        raise CapError(f"{what} is {value} -- set a number")


def check_recipe_caps(recipe: RecipeConfig, limits: Caps | None = None) -> None:
    """CapError when a knob is over its cap; reads nothing from disk, so it can run before anything else."""
    limits = limits or caps()
    t = recipe.training
    for value, what in ((t.epochs, "epochs"), (t.max_steps, "max steps"), (t.batch_size, "batch size"),
                        (recipe.data.max_length, "max length"), (recipe.lora.r, "LoRA rank"),
                        (t.scorecard_questions, "scorecard questions")):
        _finite(float(value), what)
    if t.max_steps > 0:
        check_cap(t.max_steps, limits.training_steps, "max steps", STEPS_FIX)
    else:  # epochs count only when max steps doesn't override them
        check_cap(t.epochs, limits.training_epochs, "epochs", EPOCHS_FIX)
    check_cap(t.batch_size, limits.batch_size, "batch size", BATCH_FIX)
    check_cap(recipe.data.max_length, limits.max_length, "max length", LENGTH_FIX)
    check_cap(recipe.lora.r, limits.lora_rank, "LoRA rank", RANK_FIX)
    if limits.scorecard_questions is not None:  # a number here; 0 (all of them) is counted by check_scorecard_caps
        check_cap(t.scorecard_questions, limits.scorecard_questions, "scorecard questions",
                  SCORECARD_FIX.format(cap=limits.scorecard_questions))


def held_out_questions(recipe: RecipeConfig) -> int:
    """How many questions 'all' means for the scorecard: the validation files' examples, else a child run's parent's
    held-out rows (SFT or DPO: a child is scored on them), or the share of the training data split off for it (split
    as training splits it; rows too long for max length still count). UsageError when the parent may not be used."""
    from tuning.data.examples import load_examples, split_examples
    from tuning.training.parent import check_parent, parent_validation_rows

    if recipe.data.validation:
        return len(load_examples(recipe.data.validation).examples)
    parent = check_parent(recipe)  # the run folder's files only, no model; DPO without a parent is refused here
    if parent is not None:
        return len(parent_validation_rows(parent))
    train = load_examples(recipe.data.train).examples
    return len(split_examples(train, recipe.data.validation_fraction, recipe.training.seed)[1])


def check_scorecard_caps(recipe: RecipeConfig, limits: Caps | None = None) -> None:
    """CapError when a scorecard of all the held-out questions (scorecard questions 0) would be over the cap;
    reads the data, so only when such a cap is in force."""
    limits = limits or caps()
    cap = limits.scorecard_questions
    if cap is None or recipe.training.scorecard_questions > 0:  # a number was checked by check_recipe_caps
        return
    check_cap(held_out_questions(recipe), cap, "the scorecard's questions (scorecard questions 0: all the held-out "
              "ones)", SCORECARD_FIX.format(cap=cap))


def needs_estimate(limits: Caps) -> bool:
    """True when a cap can only be checked against the estimate (the steps epochs make, the minutes)."""
    return limits.training_steps is not None or limits.run_minutes is not None


def check_estimate_caps(estimate: Estimate, limits: Caps | None = None) -> None:
    """CapError when the steps that will run, or the estimated minutes, are over their caps."""
    limits = limits or caps()
    check_cap(estimate.steps, limits.training_steps, "the optimizer steps this run will take", PLANNED_STEPS_FIX)
    check_cap(estimate.seconds / 60, limits.run_minutes, "the estimated training time (minutes)", MINUTES_FIX)


def preflight(recipe: RecipeConfig, runs_dir: Path | None = None) -> Estimate | None:
    """Check a run against the caps in force, the knobs first (no disk), then the questions a scorecard of 'all'
    answers and its estimate when caps need them; returns that estimate (None when no cap needed it). CapError or
    the data's / the estimate's own error if not."""
    limits = caps()
    check_recipe_caps(recipe, limits)
    check_scorecard_caps(recipe, limits)
    if not needs_estimate(limits):
        return None
    estimate = estimate_recipe(recipe, runs_dir)
    check_estimate_caps(estimate, limits)
    return estimate
