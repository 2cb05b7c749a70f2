"""The label-mask preview: one row's tokens as training sees them, each marked trained on (the answer: a label the
loss reads) or context only (system turn, question, chat template), with the counts and whether max_length cuts it.

Nothing is computed here that training computes: the row is read and normalized by the loader's own functions, and
its ids and labels come from `tuning.training.train.encode_row`, the call `python -m tuning train` makes for every
conversation (the recipe's system prompt added, the BOS a Llama tokenizer needs, every assistant turn labelled,
cut at data.max_length). So a template mistake shows here before any compute is spent, and the preview can't
disagree with training. Only the tokenizer loads, never the weights.

Rows are numbered as the loader's error messages number them: from 1, a JSONL file's line, a JSON array's element,
a CSV file's data row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tuning.config import DPO, RecipeConfig
from tuning.data.chat_template import IGNORE_INDEX
from tuning.data.examples import load_examples, split_examples
from tuning.data.files import DataError, one_line, read_file_rows
from tuning.data.hub_dataset import hub_examples_rows
from tuning.data.hub_spec import is_hub_spec
from tuning.data.shapes import is_blank, normalize_row_with_shape
from tuning.errors import UsageError

REPLACEMENT = "\ufffd"  # what decoding shows for a token that ends part-way through a character
MAX_PENDING = 4  # a UTF-8 character is at most 4 bytes, so at most 4 byte-level tokens make one
CONTEXT_WINDOW = 4  # tokens decoded before a piece, so a SentencePiece word keeps its leading space
OPEN, CLOSE = "[[", "]]"  # trained spans, where colour can't be shown (a log, a pipe)
ANSI_TRAINED, ANSI_CONTEXT, ANSI_RESET = "\x1b[1;30;42m", "\x1b[2m", "\x1b[0m"
SHOWN_CONTROLS = {"\n", "\t"}


@dataclass(frozen=True)
class TokenPiece:
    """The text of one token (or of the few byte-level tokens that make one character together) and whether the
    loss trains on it."""

    text: str
    trained: bool
    ids: tuple[int, ...]


@dataclass
class LabelPreview:
    """One row as training tokenizes it: its ids and labels exactly as the trainer gets them, and their pieces."""

    file: str  # the data file's name
    row: int  # the row's number in it, from 1
    rows: int  # the file's last row number (the range a row may be picked from)
    model: str  # the base model whose tokenizer and chat template rendered it
    method: str  # the training method (sft)
    max_length: int
    input_ids: list[int]
    labels: list[int]
    truncated: bool  # the conversation ran past data.max_length and training cuts it there
    pieces: list[TokenPiece]
    notes: list[str] = field(default_factory=list)  # what else training does with this row (dropped, held out...)

    @property
    def trained_tokens(self) -> int:
        """Tokens the loss trains on (their label is the token itself)."""
        return sum(label != IGNORE_INDEX for label in self.labels)

    @property
    def context_tokens(self) -> int:
        """Tokens the model reads but isn't trained to write (system turn, question, template)."""
        return len(self.labels) - self.trained_tokens

    def spans(self) -> list[tuple[str, bool]]:
        """The text in runs of trained or context tokens: (text, trained) in order."""
        runs: list[tuple[str, bool]] = []
        for piece in self.pieces:
            if runs and runs[-1][1] == piece.trained:
                runs[-1] = (runs[-1][0] + piece.text, piece.trained)
            else:
                runs.append((piece.text, piece.trained))
        return runs

    def summary(self) -> str:
        """One line of counts, e.g. 'row 1 of train.jsonl: 45 tokens, 12 trained on (the answers), 33 context ...'."""
        cut = (f"truncated: longer than data.max_length={self.max_length}, training cuts it there"
               if self.truncated else f"not truncated (data.max_length={self.max_length})")
        return (f"row {self.row} of {self.file} ({self.model}): {len(self.input_ids)} tokens, {self.trained_tokens} "
                f"trained on (the answers), {self.context_tokens} context (system, question, template); {cut}")


def preview_row(recipe: RecipeConfig, row_number: int, *, file: str | None = None, tokenizer=None,
                model: str | None = None) -> LabelPreview:
    """Row `row_number` (from 1, as error messages number rows) of the recipe's training data, tokenized and
    masked by training's own code. `file`: which of data.train when it names several (a name or path; default the
    first). `tokenizer`: one already loaded for the recipe's model, `model` its name to show (default: load the
    model's tokenizer only)."""
    if recipe.training.method == DPO:
        raise UsageError("the label-mask preview covers SFT rows (one conversation, the assistant's turns trained); "
                         "this recipe trains with DPO, which scores each pair's chosen and rejected answers after the "
                         "same prompt -- preview the parent run's recipe, or set training.method=sft to check how "
                         "the chat template renders a conversation")
    entry = _train_entry(recipe, file)
    name = _entry_name(entry)
    rows, errors = _read_entry(entry)
    example, last = _read_row(name, rows, errors, row_number)
    notes = _training_notes(recipe, entry, rows, row_number)
    model = model or recipe.model.name
    if tokenizer is None:
        tokenizer, model = recipe_tokenizer(recipe)
    from tuning.training.train import encode_row  # the call training makes for every conversation

    encoded = encode_row(example, tokenizer, recipe)
    if all(label == IGNORE_INDEX for label in encoded.labels):
        notes.append(f"no answer token is left within data.max_length={recipe.data.max_length}: training leaves this "
                     "row out -- raise data.max_length or shorten the row")
    return LabelPreview(file=name, row=row_number, rows=last, model=model, method=recipe.training.method,
                        max_length=recipe.data.max_length, input_ids=list(encoded.input_ids),
                        labels=list(encoded.labels), truncated=encoded.truncated,
                        pieces=token_pieces(tokenizer, encoded.input_ids, encoded.labels), notes=notes)


def recipe_tokenizer(recipe: RecipeConfig):
    """The tokenizer training would load for this recipe (a child run's: its parent's base model), and the model's
    display name. Only the tokenizer: no weights are read."""
    from tuning.training.parent import check_parent, inherit_from_parent

    parent = check_parent(recipe)
    if parent:
        recipe = inherit_from_parent(recipe, parent)
    return model_tokenizer(recipe.model.name, recipe.model.revision)


def model_tokenizer(name: str, revision: str | None = None):
    """A base model's tokenizer as training loads it ('auto', 'embedded', a Hub id...; on a shared app never a local
    folder), and the model's display name."""
    from tuning.models.loading import display_name, load_tokenizer, resolve_model

    model_ref = resolve_model(name, revision)
    return load_tokenizer(model_ref.path), display_name(model_ref)


def _train_entry(recipe: RecipeConfig, file: str | None) -> str:
    entries = [str(entry) for entry in recipe.data.train]
    if not entries:
        raise UsageError("the recipe names no training data -- set data.train to a .jsonl, .json or .csv file")
    if file is None:
        return entries[0]
    for entry in entries:
        if file in (entry, _entry_name(entry)):
            return entry
    raise UsageError(f"{one_line(file)} is not one of the recipe's training files -- pick one of: "
                     f"{', '.join(map(_entry_name, entries))}")


def _entry_name(entry: str) -> str:
    return entry if is_hub_spec(entry) else Path(entry).name


def _read_entry(entry: str):
    """(number, row) pairs and the rows' read errors, by the training loader's own readers (no upload limits, as
    training reads): a file, or a hub: dataset (tuning.data.hub_dataset)."""
    if is_hub_spec(entry):
        return hub_examples_rows(entry)[0], []
    return read_file_rows(Path(entry))


def _read_row(name: str, rows: list, errors: list, number: int) -> tuple[dict, int]:
    """The row normalized as the loader normalizes it, and the last row number."""
    last = max([n for n, _ in rows] + [e.row for e in errors])
    if not 1 <= number <= last:
        raise UsageError(f"there is no row {number} in {name}: its rows are numbered 1 to {last} -- pick one "
                         "of those")
    problems = [dataclasses.replace(e, file=name) for e in errors if e.row == number]
    if problems:
        raise DataError(f"{name} row {number} can't be used -- fix it and preview again", problems)
    raw = dict(rows).get(number)
    if raw is None:
        raise UsageError(f"{name} row {number} is a blank line, which training skips -- pick another row "
                         f"(1 to {last})")
    if all(is_blank(value) for value in raw.values()):
        raise UsageError(f"{name} row {number}: every field is blank, so training skips it -- pick another row")
    try:
        example, _, _ = normalize_row_with_shape(raw, number)
    except DataError as error:
        problems = [dataclasses.replace(e, file=name) for e in error.errors]
        raise DataError(f"{name} row {number} can't be used -- fix it and preview again", problems) from None
    return example, last


def _training_notes(recipe: RecipeConfig, entry: str, rows: list, number: int) -> list[str]:
    """What training's loader does with this row beyond tokenizing it: removed as a duplicate, or held out for
    validation by the seeded split. Read for a recipe with one training file (the app's); [] otherwise."""
    if len(recipe.data.train) != 1:
        return []
    try:
        loaded = load_examples([entry])  # as prepare_data loads it (lengths aside, which this preview shows)
    except DataError as error:
        return [f"training refuses {_entry_name(entry)} as it is: {str(error).splitlines()[0]}"]
    report = loaded.report
    if number in report.duplicate_rows:
        return [f"{note} by training: its tokens are shown, but only the first copy is trained on"
                for note in report.notes if note.startswith(f"row {number}: duplicate")]
    if recipe.data.validation or recipe.training.parent_run:
        return []  # no split: every row of data.train is trained on
    skipped = set(report.empty_rows) | set(report.duplicate_rows)
    kept = [n for n, _ in rows if n not in skipped]
    _, held_out = split_examples(range(len(kept)), recipe.data.validation_fraction, recipe.training.seed)
    if kept.index(number) in held_out:
        return [f"held out for validation (data.validation_fraction={recipe.data.validation_fraction}, seed "
                f"{recipe.training.seed}): its loss is measured on these same labels, but it isn't trained on"]
    return []


def token_pieces(tokenizer, input_ids: list[int], labels: list[int]) -> list[TokenPiece]:
    """Each token's text as it reads in the decoded conversation (a word keeps its leading space; the byte-level
    tokens of one character stay together), with its trained flag. The pieces join to the decoded ids."""
    pieces: list[TokenPiece] = []
    start = 0
    for end in range(1, len(input_ids) + 1):
        context = max(0, start - CONTEXT_WINDOW)
        text = _decode(tokenizer, input_ids[context:end])
        if text.endswith(REPLACEMENT) and end - start < MAX_PENDING and end < len(input_ids):
            continue  # a character split over tokens: wait for its last byte
        before = _decode(tokenizer, input_ids[context:start])
        piece = text[len(before):] if text.startswith(before) else _decode(tokenizer, input_ids[start:end])
        flags = {labels[i] != IGNORE_INDEX for i in range(start, end)}
        if len(flags) == 1:
            pieces.append(TokenPiece(piece, flags.pop(), tuple(input_ids[start:end])))
        else:  # a character split between context and answer (never seen with a real template): token by token
            pieces += [TokenPiece(_decode(tokenizer, [input_ids[i]]), labels[i] != IGNORE_INDEX, (input_ids[i],))
                       for i in range(start, end)]
        start = end
    return pieces


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) if ids else ""


def printable(text: str) -> str:
    """Row text safe for a terminal: control characters (an escape sequence in a row) shown as escapes."""
    return "".join(ch if ch.isprintable() or ch in SHOWN_CONTROLS else repr(ch)[1:-1] for ch in text)


def format_preview(preview: LabelPreview, colour: bool) -> str:
    """The row with its trained spans marked -- ANSI colours for a terminal, else [[...]] -- then the counts."""
    parts = []
    for text, trained in preview.spans():
        shown = printable(text)
        if colour:
            style = ANSI_TRAINED if trained else ANSI_CONTEXT
            parts.append("\n".join(f"{style}{line}{ANSI_RESET}" if line else "" for line in shown.split("\n")))
        else:
            parts.append(f"{OPEN}{shown}{CLOSE}" if trained else shown)
    legend = (f"{ANSI_TRAINED}trained on{ANSI_RESET} / {ANSI_CONTEXT}context{ANSI_RESET}" if colour
              else f"{OPEN}trained on{CLOSE} / context")
    lines = ["".join(parts), "", legend, preview.summary(), *(f"note: {note}" for note in preview.notes)]
    return "\n".join(lines)

