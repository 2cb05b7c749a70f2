"""The label-mask preview (tuning/data/label_preview.py, `python -m tuning preview`, the Data tab's panel): a row's
tokens and labels are exactly those training builds, shown as trained on (the answers) or context."""

import dataclasses

import pytest
from helpers import KALEVALA, REPO, TINY_TRAIN, write_bos_tokenizer, write_jsonl

from tuning.cli import main
from tuning.config import load_recipe
from tuning.data.chat_template import IGNORE_INDEX
from tuning.data.label_preview import format_preview, preview_row, recipe_tokenizer
from tuning.errors import KanteleError, UsageError
from tuning.training.train import prepare_data

KALEVALA_RECIPE = REPO / "configs" / "kalevala.yaml"
SYSTEM = "You are a helpful assistant."
MULTI_TURN = {"messages": [{"role": "user", "content": "Who forged the Sampo?"},
                           {"role": "assistant", "content": "Ilmarinen."},
                           {"role": "user", "content": "For whom?"},
                           {"role": "assistant", "content": "For Louhi, the mistress of Pohjola."}]}


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(KALEVALA_RECIPE)


@pytest.fixture(scope="module")
def tokenizer(recipe):
    return recipe_tokenizer(recipe)[0]


@pytest.fixture(scope="module")
def kalevala_train_set(recipe, tokenizer, tmp_path_factory):
    """What `python -m tuning train` hands the Trainer for the Kalevala recipe (train.jsonl in file order)."""
    train_set, _ = prepare_data(recipe, tokenizer, tmp_path_factory.mktemp("run"), record=False)
    return train_set


def with_data(recipe, path, **data):
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, train=[str(path)], **data))


def texts(preview, trained: bool) -> str:
    return "".join(text for text, flag in preview.spans() if flag == trained)


@pytest.mark.parametrize("row", [1, 2, 268, 537])
def test_the_preview_is_exactly_what_training_builds(recipe, tokenizer, kalevala_train_set, row):
    preview = preview_row(recipe, row, tokenizer=tokenizer)
    built = kalevala_train_set[row - 1]  # the Kalevala rows are all kept, in file order
    assert preview.input_ids == built["input_ids"]
    assert preview.labels == built["labels"]
    # The pieces are those ids, in order, each flagged as its label says.
    assert [i for piece in preview.pieces for i in piece.ids] == built["input_ids"]
    assert [piece.trained for piece in preview.pieces for _ in piece.ids] == \
        [label != IGNORE_INDEX for label in built["labels"]]
    assert "".join(piece.text for piece in preview.pieces) == tokenizer.decode(built["input_ids"])
    assert (preview.file, preview.row, preview.rows, preview.method) == ("train.jsonl", row, 537, "sft")


def test_counts_add_up_and_the_answer_alone_is_trained(recipe, tokenizer):
    preview = preview_row(recipe, 1, tokenizer=tokenizer)
    assert preview.trained_tokens + preview.context_tokens == len(preview.input_ids) == 36
    assert preview.trained_tokens == sum(len(p.ids) for p in preview.pieces if p.trained) == 9
    assert not preview.truncated and preview.notes == []
    context, trained = texts(preview, False), texts(preview, True)
    # The recipe's system prompt (the row has none), the question and the template's tags are context only.
    assert SYSTEM in context and "Which girl turned into a fish?" in context and "<|im_start|>assistant" in context
    assert trained.startswith("Aino, after drowning herself.")
    assert SYSTEM not in trained and "<|im_start|>" not in trained
    assert "9 trained on" in preview.summary() and "27 context" in preview.summary()


def test_max_length_truncation_is_reported(recipe, tokenizer):
    cut = with_data(recipe, KALEVALA / "train.jsonl", max_length=30)
    preview = preview_row(cut, 1, tokenizer=tokenizer)
    assert preview.truncated and len(preview.input_ids) == 30 and preview.trained_tokens == 3
    assert "truncated" in preview.summary() and preview.notes == []
    prompt_only = preview_row(with_data(recipe, KALEVALA / "train.jsonl", max_length=20), 1, tokenizer=tokenizer)
    assert prompt_only.truncated and prompt_only.trained_tokens == 0
    assert "training leaves this row out" in prompt_only.notes[0]


def test_every_assistant_turn_of_a_conversation_is_trained(recipe, tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", [MULTI_TURN, TINY_TRAIN[0]])
    multi = with_data(recipe, data, validation=[str(data)])
    preview = preview_row(multi, 1, tokenizer=tokenizer)
    trained = [text for text, flag in preview.spans() if flag]
    assert [t.split("<|im_end|>")[0] for t in trained] == ["Ilmarinen.", "For Louhi, the mistress of Pohjola."]
    assert "For whom?" in texts(preview, False)
    built, _ = prepare_data(multi, tokenizer, tmp_path, record=False)
    assert (preview.input_ids, preview.labels) == (built[0]["input_ids"], built[0]["labels"])


def test_what_training_does_with_a_row_beyond_its_tokens(recipe, tokenizer, tmp_path):
    rows = [*TINY_TRAIN, dict(TINY_TRAIN[0])]  # row 9 repeats row 1
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    split = with_data(recipe, data, validation=[], validation_fraction=0.25)
    duplicate = preview_row(split, 9, tokenizer=tokenizer)
    assert "row 9: duplicate of row 1" in duplicate.notes[0]
    # Held out by training's seeded split: which rows are, training itself says.
    split = dataclasses.replace(split, training=dataclasses.replace(split.training, probes=[]))
    trained_set, validation_set = prepare_data(split, tokenizer, tmp_path, record=False)
    held_out = [preview_row(split, n, tokenizer=tokenizer) for n in range(1, 9)]
    for preview in held_out:
        in_validation = preview.input_ids in [v["input_ids"] for v in validation_set]
        assert in_validation == any("held out for validation" in note for note in preview.notes)
        assert in_validation != (preview.input_ids in [t["input_ids"] for t in trained_set])
    assert sum(bool(p.notes) for p in held_out) == len(validation_set) == 2


def test_a_tokenizer_that_adds_bos_gets_it_as_context(recipe, tmp_path):
    """TinyLlama's tokenizer starts text with BOS and its template doesn't write it: training adds it, so does
    the preview (a SentencePiece Llama tokenizer trained here, as tests/data/test_bos.py builds one)."""
    from transformers import AutoTokenizer

    write_bos_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)

    data = write_jsonl(tmp_path / "train.jsonl", TINY_TRAIN[:2])
    tiny = with_data(recipe, data, validation=[str(data)])
    preview = preview_row(tiny, 2, tokenizer=tokenizer)
    assert preview.input_ids[0] == tokenizer.bos_token_id and not preview.pieces[0].trained
    built, _ = prepare_data(tiny, tokenizer, tmp_path, record=False)
    assert (preview.input_ids, preview.labels) == (built[1]["input_ids"], built[1]["labels"])
    # SentencePiece words keep their spaces: the pieces read as the decoded conversation.
    assert "".join(piece.text for piece in preview.pieces) == tokenizer.decode(preview.input_ids)
    assert texts(preview, True).startswith("Elias Lönnrot put it together.")


def test_rows_are_numbered_as_error_messages_number_them(recipe, tokenizer, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "Q1", "response": "A1"}\n\n{"prompt": "Q3"}\n[1]\n{"prompt": "", "response": ""}\n'
                    '{"prompt": "Q6", "response": "A6"}\n', encoding="utf-8")
    rows = with_data(recipe, data)
    assert texts(preview_row(rows, 6, tokenizer=tokenizer), True).startswith("A6")
    for number, message in [(0, "numbered 1 to 6"), (7, "there is no row 7 in rows.jsonl: its rows are numbered 1 "
                                                         "to 6"),
                            (2, "row 2 is a blank line"), (3, "rows.jsonl row 3: response"),
                            (4, "rows.jsonl row 4: (row): expected a JSON object"), (5, "every field is blank")]:
        with pytest.raises(KanteleError) as error:
            preview_row(rows, number, tokenizer=tokenizer)
        assert message in str(error.value)


def test_a_preference_recipe_is_told_the_preview_covers_sft(tokenizer):
    with pytest.raises(UsageError, match="covers SFT rows.*DPO"):
        preview_row(load_recipe(REPO / "configs" / "kalevala-dpo.yaml"), 1, tokenizer=tokenizer)


def test_cli_prints_trained_spans_in_brackets_and_the_counts(capsys):
    assert main(["preview", "--config", str(KALEVALA_RECIPE), "--row", "1"]) == 0
    out = capsys.readouterr().out
    assert "[[Aino, after drowning herself.<|im_end|>\n]]" in out
    assert f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhich girl turned into a fish?" in out
    assert "row 1 of train.jsonl (SmolLM2-135M-Instruct (embedded)): 36 tokens, 9 trained on" in out
    assert "\x1b[" not in out  # not a terminal: no colour codes in a log

    assert main(["preview", "--config", str(KALEVALA_RECIPE), "--row", "1", "--set", "data.max_length=30"]) == 0
    assert "truncated: longer than data.max_length=30" in capsys.readouterr().out


def test_cli_bad_row_names_the_range(capsys):
    assert main(["preview", "--config", str(KALEVALA_RECIPE), "--row", "538"]) == 2
    assert "error: there is no row 538 in train.jsonl: its rows are numbered 1 to 537" in capsys.readouterr().err


def test_terminal_colours_and_escape_sequences_in_a_row(recipe, tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "evil.jsonl", [{"prompt": "Clear?", "response": "Gone\x1b[2J\x07 now"}])
    preview = preview_row(with_data(recipe, data), 1, tokenizer=tokenizer)
    shown = format_preview(preview, colour=True)
    assert "\x1b[2J" not in shown and "\x07" not in shown and "Gone\\x1b[2J\\x07 now" in shown
    assert "\x1b[1;30;42mGone" in shown and "\x1b[2m<|im_start|>user" in shown
    assert "[[" not in shown


def test_data_tab_panel_shows_the_sessions_training_set(monkeypatch):
    import gradio as gr

    from ui.label_preview_panel import CONTEXT, TRAINED, build_label_preview_panel, show_label_preview

    dataset = {"train_file": str(KALEVALA / "train.jsonl"), "validation_file": str(KALEVALA / "validation.jsonl")}
    value, counts = show_label_preview(1, "embedded", 256, dataset)
    assert value[-1] == ("Aino, after drowning herself.<|im_end|>\n", TRAINED)
    assert value[0][1] == CONTEXT and SYSTEM in value[0][0] and len(value) == 2
    assert "36 tokens, 9 trained on (the answers), 27 context" in counts
    gr.HighlightedText(combine_adjacent=True).postprocess(value)  # a value the component takes
    _, cut = show_label_preview(1, "embedded", 30, dataset)
    assert "truncated" in cut

    for row, model, length, data, message in [
            (0, "embedded", 256, dataset, "the row must be from 1"),
            (float("nan"), "embedded", 256, dataset, "the row must be a whole number"),
            (538, "embedded", 256, dataset, "numbered 1 to 537"),
            (1, "/etc", 256, dataset, "pick one of the listed models"),  # never a typed folder or name
            (1, "embedded", 256, {}, "load a dataset first")]:
        value, counts = show_label_preview(row, model, length, data)
        assert value == [] and "No preview" in counts and message in counts, counts
    monkeypatch.setenv("KANTELE_SHARED", "1")
    _, counts = show_label_preview(1, "embedded", 100_000, dataset)
    assert "No preview" in counts and "max length" in counts  # the shared app's cap

    with gr.Blocks():
        build_label_preview_panel(gr.State({}))


def test_a_hub_dataset_row_is_read_by_the_loaders_own_reader(recipe, tokenizer, monkeypatch):
    """data.train: [hub:...] rows come through tuning.data.hub_dataset, as load_examples reads them (the fetch itself
    is tested with the Hub dataset loader; here it is stubbed)."""
    import tuning.data.examples
    import tuning.data.label_preview

    def rows(entry, limits=None, token=None):
        return [(1, {"question": "Who sang the sea?", "answer": "Väinämöinen."})], "abc123"

    monkeypatch.setattr(tuning.data.label_preview, "hub_examples_rows", rows)
    monkeypatch.setattr(tuning.data.examples, "hub_examples_rows", rows)
    spec = "hub:someone/kalevala-qa:train"
    preview = preview_row(with_data(recipe, spec, validation=[]), 1, tokenizer=tokenizer)
    assert preview.file == spec and texts(preview, True).startswith("Väinämöinen.")
    with pytest.raises(UsageError, match=f"no row 2 in {spec}: its rows are numbered 1 to 1"):
        preview_row(with_data(recipe, spec), 2, tokenizer=tokenizer)
