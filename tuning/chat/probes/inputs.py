"""What the probes a recipe asks for need, checked before training: a retrieval column needs the documents the
pairs were made from, and those must exist. Found out at the scorecard, the run would already be spent."""

from __future__ import annotations

from pathlib import Path

from tuning.config import RecipeConfig
from tuning.errors import UsageError

NO_RECIPE_SOURCES = ("the retrieval probe needs the documents the pairs were made from -- give them as data.sources "
                     "(in the app: generate the pairs from your documents, or load the Kalevala example), or leave "
                     "retrieval out of the probes")


def check_probe_inputs(recipe: RecipeConfig, train_questions: list[str]) -> None:
    """UsageError naming the fix when a source document is missing, or retrieval has nothing to search."""
    missing = [source for source in recipe.data.sources if not Path(source).is_file()]
    if missing:
        raise UsageError(f"data.sources: {missing[0]} is not a file -- give the .txt, .md or .pdf documents the "
                         "pairs were made from, or leave data.sources empty")
    if "retrieval" in recipe.training.probes:
        from tuning.chat.retrieval import sources_for

        if not sources_for(train_questions, recipe.data.sources):
            raise UsageError(NO_RECIPE_SOURCES)
