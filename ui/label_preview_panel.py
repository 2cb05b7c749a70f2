"""The Data tab's label-mask preview: a row of the visitor's training set as training tokenizes it, each token marked
trained on (the answer) or context (system turn, question, chat template), with the counts -- a template mistake
shows before any compute is spent. The engine is tuning/data/label_preview.py, which calls training's own encoder.

What a visitor controls is bounded: the row is a number within their training set, the model one of the Train tab's
own choices (never a typed name or folder), the length within the shared app's cap. The row's text shows in a
HighlightedText, which renders it as text: no HTML, no images.
"""

from __future__ import annotations

import functools
import math

import gradio as gr

from tuning.config import ConfigError
from tuning.data.label_preview import LabelPreview, model_tokenizer, preview_row
from tuning.errors import KanteleError
from tuning.runs.caps import check_recipe_caps
from ui.messages import for_visitor
from ui.train_tab import MODEL_CHOICES, build_recipe, default_preset, preset_settings

TRAINED, CONTEXT = "trained on", "context"
COLOURS = {TRAINED: "#22c55e", CONTEXT: "#d1d5db"}
MAX_ROW = 10_000_000  # far past any upload cap: the file's own range is checked when it is read
INTRO = ("How training reads one conversation: the tokens it is **trained on** (the assistant's answers) and those "
         "that are **context** only (the system prompt, the question, the chat template's tags). Rows are numbered as "
         "in the cleaned training set the Train tab trains on (its download is above), with the Train tab's preset "
         "and this model.")


@functools.lru_cache(maxsize=len(MODEL_CHOICES))
def _tokenizer(name: str):
    """A Train-tab model's tokenizer and display name, loaded once (never its weights)."""
    return model_tokenizer(name)


def highlighted(preview: LabelPreview) -> list[tuple[str, str]]:
    """The HighlightedText value: the row's text in runs, each labelled trained on or context."""
    return [(text, TRAINED if trained else CONTEXT) for text, trained in preview.spans()]


def counts_line(preview: LabelPreview) -> str:
    """The counts and the notes, as inert Markdown."""
    lines = [preview.summary(), *(f"note: {note}" for note in preview.notes)]
    return for_visitor("\n\n".join(lines))


def show_label_preview(row, model: str, max_length, dataset: dict):
    """(HighlightedText value, counts Markdown) for row `row` of the session's training set, tokenized for `model` as
    the Train tab's preset would train it; an empty preview and the reason when it can't be shown."""
    try:
        if model not in MODEL_CHOICES:  # a dropdown's value arrives from the browser: only the tab's own choices
            raise ConfigError(f"pick one of the listed models ({', '.join(MODEL_CHOICES)})")
        number = _whole(row, "the row", 1, MAX_ROW)
        length = _whole(max_length, "max length", 1, MAX_ROW)
        recipe = build_recipe(default_preset(), {"model.name": model, "data.max_length": length}, dataset or {})
        check_recipe_caps(recipe)
        tokenizer, name = _tokenizer(recipe.model.name)
        preview = preview_row(recipe, number, tokenizer=tokenizer, model=name)
    except KanteleError as error:
        return [], for_visitor(f"**No preview:** {error}")
    return highlighted(preview), counts_line(preview)


def _whole(value, what: str, low: int, high: int) -> int:
    """A visitor's number as a whole number in [low, high]; ConfigError naming the range otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{what} must be a whole number from {low}")
    if not low <= int(number) <= high:
        raise ConfigError(f"{what} must be from {low} to {high:,}")
    return int(number)


def build_label_preview_panel(dataset_state: gr.State) -> None:
    """The accordion under the Data tab's preview."""
    preset = preset_settings(default_preset())
    with gr.Accordion("Label-mask preview", open=False, elem_id="label-preview"):
        gr.Markdown(INTRO)
        with gr.Row():
            row = gr.Number(value=1, precision=0, minimum=1, maximum=MAX_ROW, label="Row", elem_id="label-preview-row")
            model = gr.Dropdown(MODEL_CHOICES, value=preset["model.name"] if preset["model.name"] in MODEL_CHOICES
                                else MODEL_CHOICES[0], allow_custom_value=False, label="Base model (tokenizer only)")
            max_length = gr.Number(value=preset["data.max_length"], precision=0, minimum=16,
                                   label="Max length (tokens)")
            show = gr.Button("Show", elem_id="label-preview-show")
        tokens = gr.HighlightedText(label="Tokens", color_map=COLOURS, show_legend=True, combine_adjacent=True,
                                    elem_id="label-preview-tokens")
        counts = gr.Markdown(elem_id="label-preview-counts")
        show.click(show_label_preview, [row, model, max_length, dataset_state], [tokens, counts])
