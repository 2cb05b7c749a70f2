"""Tests for tuning.data.examples: every file format and row shape, row-numbered errors, dedupe, split, JSONL IO."""

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuning.data.examples import (
    PASSTHROUGH_FIELDS,
    SUPPORTED_SUFFIXES,
    DataError,
    DataReport,
    LoadedData,
    RowError,
    find_overlap,
    fingerprint_examples,
    load_examples,
    normalize_row,
    read_jsonl,
    read_rows,
    reference_answers,
    split_examples,
    user_prompts,
    write_jsonl,
)

QA = [{"role": "user", "content": "Who forged the Sampo?"}, {"role": "assistant", "content": "Ilmarinen."}]

# One row of every supported shape, each meaning the QA conversation above.
SHAPES = {
    "prompt/response": {"prompt": "Who forged the Sampo?", "response": "Ilmarinen."},
    "question/answer": {"question": "Who forged the Sampo?", "answer": "Ilmarinen."},
    "prompt/completion": {"prompt": "Who forged the Sampo?", "completion": "Ilmarinen."},
    "alpaca": {"instruction": "Who forged the Sampo?", "input": "", "output": "Ilmarinen."},
    "sharegpt": {
        "conversations": [{"from": "human", "value": "Who forged the Sampo?"}, {"from": "gpt", "value": "Ilmarinen."}]
    },
    "messages": {"messages": QA},
}
FORMATS = ("jsonl", "json-array", "json-object-of-list", "json-dict-of-rows", "csv")


def write_rows(folder: Path, fmt: str, rows: list[dict], name: str = "data") -> Path:
    """Write rows in one of FORMATS; CSV cells holding lists are written as JSON text."""
    if fmt == "jsonl":
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        path = folder / f"{name}.csv"
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in rows:
                writer.writerow(
                    [json.dumps(r[c]) if isinstance(r.get(c), (list, dict)) else r.get(c, "") for c in columns]
                )
    else:
        path = folder / f"{name}.json"
        data = {
            "json-array": rows,
            "json-object-of-list": {"version": 2, "examples": rows},
            "json-dict-of-rows": {f"q{i}": r for i, r in enumerate(rows)},
        }[fmt]
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def write_lines(folder: Path, lines: list, name: str = "data.jsonl") -> Path:
    """Write a JSONL file line by line: dicts are dumped, strings written as they are."""
    path = folder / name
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines), encoding="utf-8")
    return path


def only_error(path) -> RowError:
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert len(caught.value.errors) == 1, caught.value
    return caught.value.errors[0]


# --- formats and shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_loads_from_every_format(tmp_path, fmt, shape):
    other = {k: (v.replace("Sampo", "Kantele") if isinstance(v, str) else v) for k, v in SHAPES[shape].items()}
    if shape in ("sharegpt", "messages"):
        key, text = ("conversations", "value") if shape == "sharegpt" else ("messages", "content")
        other = {key: [dict(t, **{text: t[text] + " (2)"}) for t in SHAPES[shape][key]]}
    loaded = load_examples(write_rows(tmp_path, fmt, [SHAPES[shape], other]))
    assert isinstance(loaded, LoadedData)
    assert loaded.examples[0] == {"messages": QA}
    assert len(loaded.examples) == 2
    assert loaded.report.shape_counts == {shape: 2}
    assert loaded.report.kept == loaded.report.rows_read == 2


def test_mixed_shapes_in_one_file_are_counted_per_shape(tmp_path):
    rows = [
        SHAPES["prompt/response"],
        {"question": "Who is Louhi?", "answer": "Mistress of Pohjola."},
        {"messages": QA[:1] + [{"role": "assistant", "content": "Ilmarinen, the smith."}]},
    ]
    report = load_examples(write_rows(tmp_path, "jsonl", rows)).report
    assert report.shape_counts == {"prompt/response": 1, "question/answer": 1, "messages": 1}


def test_key_names_ignore_case_and_values_are_stripped(tmp_path):
    path = write_rows(tmp_path, "jsonl", [{" Prompt ": "  Who forged the Sampo?\n", "RESPONSE": "\tIlmarinen. "}])
    assert load_examples(path).examples == [{"messages": QA}]


def test_system_field_becomes_leading_turn_on_flat_shapes(tmp_path):
    row = dict(SHAPES["question/answer"], system="You know the Kalevala.")
    for fmt in ("jsonl", "csv"):
        example = load_examples(write_rows(tmp_path, fmt, [row])).examples[0]
        assert example["messages"] == [{"role": "system", "content": "You know the Kalevala."}, *QA]


def test_system_turns_in_chat_shapes(tmp_path):
    rows = [
        {"conversations": [{"from": "system", "value": "Be brief."}, *SHAPES["sharegpt"]["conversations"]]},
        {"messages": [{"role": "system", "content": "Be terse."}, *QA]},
    ]
    examples = load_examples(write_rows(tmp_path, "jsonl", rows)).examples
    assert [m["role"] for m in examples[0]["messages"]] == ["system", "user", "assistant"]
    assert examples[1]["messages"][0] == {"role": "system", "content": "Be terse."}


def test_system_field_and_system_turn_together_is_an_error(tmp_path):
    row = {"system": "A", "messages": [{"role": "system", "content": "B"}, *QA]}
    error = only_error(write_rows(tmp_path, "jsonl", [row]))
    assert (error.row, error.field) == (1, "system") and "keep one" in error.message


def test_alpaca_input_is_joined_after_a_blank_line(tmp_path):
    rows = [
        {
            "instruction": "Translate to English.",
            "input": "Vaka vanha Väinämöinen",
            "output": "Steadfast old Väinämöinen",
        },
        {"instruction": "Name the smith.", "output": "Ilmarinen"},
    ]
    examples = load_examples(write_rows(tmp_path, "jsonl", rows)).examples
    assert examples[0]["messages"][0]["content"] == "Translate to English.\n\nVaka vanha Väinämöinen"
    assert examples[1]["messages"][0]["content"] == "Name the smith."


def test_csv_with_embedded_newlines_and_quotes_keeps_row_numbers(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        "prompt,response\n"
        '"Quote the ""first"" line,\nplease","Vaka vanha Väinämöinen,\n""tietäjä iän-ikuinen"""\n'
        '"Second?",""\n',
        encoding="utf-8",
    )
    rows = read_rows(path)
    assert rows[0][0] == 1 and rows[1][0] == 2
    assert rows[0][1]["prompt"] == 'Quote the "first" line,\nplease'
    error = only_error(path)
    assert (error.row, error.field) == (2, "response")
    assert "write the answer" in error.message
    path.write_text(path.read_text(encoding="utf-8").replace('"Second?",""', '"Second?","Yes."'), encoding="utf-8")
    example = load_examples(path).examples[0]
    assert example["messages"][1]["content"] == 'Vaka vanha Väinämöinen,\n"tietäjä iän-ikuinen"'


def test_csv_messages_column_holds_json_and_bad_json_is_a_row_error(tmp_path):
    path = write_rows(tmp_path, "csv", [{"messages": QA}, {"messages": QA}])
    assert load_examples(path).examples[0] == {"messages": QA}
    path.write_text('messages\n"[{""role"": ""user"""\n', encoding="utf-8")
    error = only_error(path)
    assert (error.row, error.field) == (1, "messages") and "should hold a list" in error.message


def test_csv_row_with_too_many_cells(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,response\nWho, forged it?,Ilmarinen\nA,B,\n", encoding="utf-8")
    error = only_error(path)
    assert (error.row, error.field) == (1, "(row)") and "quote cells" in error.message


def test_csv_duplicate_header_is_a_file_error(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,Prompt,response\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match="prompt more than once"):
        load_examples(path)


def test_csv_semicolon_file_gets_a_delimiter_hint(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt;response\nWho?;Ilmarinen\n", encoding="utf-8")
    assert "comma-separated" in only_error(path).message


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json-array"])
def test_bom_is_accepted(tmp_path, fmt):
    path = write_rows(tmp_path, fmt, [SHAPES["prompt/response"]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_examples(path).examples == [{"messages": QA}]


def test_non_utf8_file_is_rejected_with_the_fix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"prompt,response\nMik\xe4 on Sampo?,mylly\n")
    with pytest.raises(DataError, match="file is not UTF-8 text — re-save it as UTF-8"):
        load_examples(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_empty_file_has_no_rows(tmp_path, suffix, content):
    path = tmp_path / f"data{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="file has no rows"):
        load_examples(path)


@pytest.mark.parametrize(
    "text,name", [("prompt,response\n", "data.csv"), ("[]", "data.json"), ('{"data": []}', "data.json")]
)
def test_header_only_or_empty_list_has_no_rows(tmp_path, text, name):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="file has no rows"):
        load_examples(tmp_path / name)


def test_unsupported_suffix_names_the_supported_ones(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("Who forged the Sampo? Ilmarinen.", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert all(s in str(caught.value) for s in SUPPORTED_SUFFIXES)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")


def test_json_single_row_object_and_several_lists(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"messages": QA}), encoding="utf-8")
    assert load_examples(path).examples == [{"messages": QA}]
    path.write_text(
        json.dumps({"train": [SHAPES["prompt/response"]], "test": [SHAPES["question/answer"]]}), encoding="utf-8"
    )
    with pytest.raises(DataError, match="several lists of rows"):
        load_examples(path)


def test_json_syntax_error_and_jsonl_saved_as_json(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"prompt": "a",\n "response": }]', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 column"):
        load_examples(path)
    path.write_text(
        json.dumps(SHAPES["prompt/response"]) + "\n" + json.dumps(SHAPES["question/answer"]) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"rename it to \.jsonl"):
        load_examples(path)


def test_json_array_item_that_is_not_an_object(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([SHAPES["prompt/response"], "just text"]), encoding="utf-8")
    error = only_error(path)
    assert (error.row, error.field) == (2, "(row)") and "each row is an object" in error.message


# --- row errors -----------------------------------------------------------------------------------

GOOD = SHAPES["prompt/response"]
USER, ASSISTANT, SYSTEM = (
    {"role": r, "content": c} for r, c in [("user", "Q?"), ("assistant", "A."), ("system", "S.")]
)

BAD_ROWS = [
    # (row, field, words the message must hold: what is wrong and the fix)
    ({"foo": "x", "bar": "y"}, "(row)", ["unknown shape", "'foo'", "'bar'", "prompt/response", "messages"]),
    ({"prompt": "Who?"}, "response", ["missing 'response'", "expected one of", "question/answer"]),
    ({"prompt": "Who?", "response": "   "}, "response", ["empty", "write the answer the model should give"]),
    ({"question": "", "answer": "Ilmarinen"}, "question", ["empty", "write the question"]),
    ({"prompt": "Who?", "response": 42}, "response", ["expected text", "a number", "quoted string"]),
    ({"instruction": ["a"], "output": "b"}, "instruction", ["expected text", "a list"]),
    ({"prompt": "Who?", "response": "A", "system": 3}, "system", ["expected text"]),
    ({"prompt": "a", "Prompt": "b", "response": "c"}, "prompt", ["same name", "keep one"]),
    (
        {"prompt": "a", "response": "b", "question": "c", "answer": "d"},
        "(row)",
        ["several shapes", "keep the fields of one"],
    ),
    ({"messages": {"role": "user"}}, "messages", ["list of turns", "an object", '"role": "user"']),
    ({"messages": ["hi", ASSISTANT]}, "messages[0]", ["expected an object", "each turn like"]),
    ({"messages": [{"content": "Q?"}, ASSISTANT]}, "messages[0].role", ["missing", "each turn needs role"]),
    ({"messages": [USER, {"role": "assistant"}]}, "messages[1].content", ["missing 'content'", "each turn needs"]),
    ({"messages": [USER, {"role": "assistant", "content": ""}]}, "messages[1].content", ["empty", "write the answer"]),
    (
        {"messages": [USER, {"role": "bot", "content": "A."}]},
        "messages[1].role",
        ["unknown role 'bot'", "system, user or assistant"],
    ),
    (
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "model", "value": "A"}]},
        "conversations[1].from",
        ["unknown role", "human, gpt"],
    ),
    (
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": None}]},
        "conversations[1].value",
        ["empty", "write the answer"],
    ),
    ({"messages": [SYSTEM, USER]}, "messages", ["no assistant turn", "end the conversation with the answer"]),
    (
        {"messages": [USER, ASSISTANT, USER]},
        "messages[2].role",
        ["last turn is from the user", "end with the assistant"],
    ),
    ({"messages": [SYSTEM, ASSISTANT]}, "messages[1].role", ["before any user turn", "start with the user"]),
    ({"messages": [ASSISTANT, USER, ASSISTANT]}, "messages[0].role", ["before any user turn"]),
    ({"messages": [USER, SYSTEM, ASSISTANT]}, "messages[1].role", ["system turn must come first", "move it"]),
    ({"messages": "not json", "source": "x"}, "messages", ["not valid JSON", "should hold a list"]),
    ({"messages": [], "source": "x"}, "messages", ["empty", "list of turns"]),
]


@pytest.mark.parametrize("row,field,words", BAD_ROWS, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD_ROWS)])
def test_bad_row_names_row_field_and_fix(tmp_path, row, field, words):
    path = write_lines(tmp_path, [GOOD, "", row])  # the blank line 2 still counts: the bad row is line 3
    with pytest.raises(DataError) as caught:
        load_examples(path)
    [error] = caught.value.errors
    assert (error.row, error.field) == (3, field)
    assert " — " in error.message, "the message must name a fix after the dash"
    for word in words:
        assert word in error.message
    assert str(error).startswith(f"row 3: {field}: ")
    assert f"row 3: {field}:" in str(caught.value)
    with pytest.raises(DataError) as direct:
        normalize_row(row, 7)
    assert [(e.row, e.field) for e in direct.value.errors] == [(7, field)]


def test_bad_json_line_and_non_object_line(tmp_path):
    path = write_lines(tmp_path, [GOOD, '{"prompt": "Who?", "response": }', "[1, 2]"])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    bad_json, not_object = caught.value.errors
    assert (bad_json.row, bad_json.field) == (2, "(row)")
    assert "Expecting value" in bad_json.message and "fix the line" in bad_json.message
    assert (not_object.row, not_object.field) == (3, "(row)") and "belongs in a .json file" in not_object.message


def test_errors_are_collected_across_rows_and_nothing_half_loads(tmp_path):
    path = write_lines(tmp_path, [GOOD, {"prompt": "x"}, SHAPES["question/answer"], {"messages": [USER]}])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert [(e.row, e.field) for e in caught.value.errors] == [(2, "response"), (4, "messages")]
    first_line = str(caught.value).splitlines()[0]
    assert "2 rows can't be used" in first_line and "data.jsonl" in first_line


def test_message_shows_twenty_errors_and_errors_holds_all(tmp_path):
    path = write_lines(tmp_path, [{"prompt": f"q{i}"} for i in range(25)])
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert len(caught.value.errors) == 25
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "... and 5 more"


def test_read_rows_returns_raw_numbered_rows(tmp_path):
    path = write_lines(tmp_path, [GOOD, "", {"anything": 1}])
    assert read_rows(path) == [(1, GOOD), (3, {"anything": 1})]
    with pytest.raises(DataError):
        read_rows(write_lines(tmp_path, ["{oops"], "bad.jsonl"))


# --- report: empty, duplicates, too long, passthrough ---------------------------------------------


def test_empty_rows_are_counted_and_skipped(tmp_path):
    other = {"question": "Who is Louhi?", "answer": "Mistress of Pohjola."}
    path = write_lines(tmp_path, [GOOD, {}, {"prompt": "", "response": None, "source": "  "}, other])
    report = load_examples(path).report
    assert (report.rows_read, report.empty, report.empty_rows, report.kept) == (4, 2, [2, 3], 2)
    assert report.notes == ["row 2: every field is blank — skipped", "row 3: every field is blank — skipped"]
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("prompt,response\n , \nWho?,Ilmarinen\n", encoding="utf-8")
    report = load_examples(csv_path).report
    assert (report.empty, report.empty_rows, report.kept) == (1, [1], 1)


def test_all_blank_rows_is_an_error(tmp_path):
    with pytest.raises(DataError, match="every row is blank"):
        load_examples(write_lines(tmp_path, [{}, {"prompt": " "}]))


def test_duplicates_removed_across_case_whitespace_and_punctuation(tmp_path):
    rows = [
        {"prompt": "Who forged the Sampo?", "response": "Ilmarinen."},
        {"prompt": "who forged  the sampo", "response": "ILMARINEN"},
        {"prompt": "Who forged the Sampo?!", "response": "Ilmarinen…"},
        {
            "prompt": "\uff37\uff48\uff4f forged the Sampo?",
            "response": "Ilmarinen.",
        },  # full-width "Who" folds under NFKC
        {"prompt": "Who forged the Sampo?", "response": "Väinämöinen asked him to."},
    ]
    loaded = load_examples(write_rows(tmp_path, "jsonl", rows))
    assert (loaded.report.duplicates_removed, loaded.report.duplicate_rows, loaded.report.kept) == (3, [2, 3, 4], 2)
    assert loaded.examples[0]["messages"][1]["content"] == "Ilmarinen."  # the first copy is the one kept
    assert "row 2: duplicate of row 1" in loaded.report.notes[0]


def test_too_long_rows_are_counted_and_kept(tmp_path):
    rows = [GOOD, {"prompt": "Tell me the whole story of the Sampo please", "response": "It is long."}]

    def words(messages):
        return sum(len(m["content"].split()) for m in messages)

    loaded = load_examples(write_rows(tmp_path, "jsonl", rows), max_tokens=8, count_tokens=words)
    assert (loaded.report.too_long, loaded.report.too_long_rows, loaded.report.kept) == (1, [2], 2)
    assert loaded.report.summary() == "read 2 rows: 2 kept, 0 empty, 0 duplicates removed, 1 too long for 8 tokens"
    assert load_examples(write_rows(tmp_path, "jsonl", rows), max_tokens=8).report.too_long == 0


def test_summary_line():
    report = DataReport(rows_read=340, empty=1, duplicates_removed=1, kept=338, max_tokens=512)
    assert report.summary() == "read 340 rows: 338 kept, 1 empty, 1 duplicate removed, 0 too long for 512 tokens"
    assert DataReport(rows_read=1, kept=1).summary() == "read 1 row: 1 kept, 0 empty, 0 duplicates removed"


def test_passthrough_fields_are_kept_and_unused_fields_reported(tmp_path):
    row = dict(GOOD, key_facts=["Ilmarinen", "smith"], source="Runo 10", id=17, category="smiths")
    loaded = load_examples(write_rows(tmp_path, "jsonl", [row]))
    assert loaded.examples == [{"messages": QA, "key_facts": ["Ilmarinen", "smith"], "source": "Runo 10", "id": 17}]
    assert set(PASSTHROUGH_FIELDS) <= set(loaded.examples[0])
    assert loaded.report.ignored_fields == {"category": 1}
    assert "ignored fields: category (1)" in loaded.report.summary()


def test_key_facts_text_is_split_on_semicolons(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        "prompt,response,key_facts\n"
        "Who forged the Sampo?,Ilmarinen.,Ilmarinen; smith ;; \n"
        "Who is Louhi?,Mistress of Pohjola.,Louhi\n"
        "Who sang?,Väinämöinen.,; ;\n",
        encoding="utf-8",
    )
    examples = load_examples(path).examples
    assert examples[0]["key_facts"] == ["Ilmarinen", "smith"]
    assert examples[1]["key_facts"] == ["Louhi"]
    assert "key_facts" not in examples[2]  # separators only: no facts, like a blank cell
    assert normalize_row(dict(GOOD, key_facts=" Sampo "), 1)["key_facts"] == ["Sampo"]


def test_key_facts_list_is_kept_as_it_is(tmp_path):
    row = dict(GOOD, key_facts=["Ilmarinen; the smith", " Sampo "])
    assert load_examples(write_rows(tmp_path, "jsonl", [row])).examples[0]["key_facts"] == row["key_facts"]


# --- split, write, read, fingerprint, accessors ---------------------------------------------------

EXAMPLES = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(10)
]


def test_split_is_deterministic_and_sized():
    train, validation = split_examples(EXAMPLES, 0.2, seed=3)
    assert (len(train), len(validation)) == (8, 2)
    assert split_examples(EXAMPLES, 0.2, seed=3) == (train, validation)
    assert sorted(map(fingerprint_examples, [[e] for e in train + validation])) == sorted(
        fingerprint_examples([e]) for e in EXAMPLES
    )
    assert any(split_examples(EXAMPLES, 0.2, seed=s) != (train, validation) for s in range(4, 10))


@pytest.mark.parametrize(
    "n,fraction,expected", [(10, 0.0, 0), (2, 0.01, 1), (3, 0.99, 2), (1, 0.5, 0), (0, 0.5, 0), (100, 0.1, 10)]
)
def test_split_sizes(n, fraction, expected):
    train, validation = split_examples(EXAMPLES[:1] * n, fraction, seed=0)
    assert (len(train), len(validation)) == (n - expected, expected)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_split_rejects_fractions_outside_zero_to_one(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        split_examples(EXAMPLES, fraction, seed=0)


def chat(*turns: str) -> dict:
    """An example whose turns alternate user, assistant, user, ..."""
    return {"messages": [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]}


def test_find_overlap_names_held_out_questions_seen_in_training():
    train = [chat("Who is Louhi?", "Mistress of Pohjola.", "Who forged the Sampo?", "Ilmarinen."), chat("q1", "a1")]
    validation = [
        chat("who forged  the SAMPO", "He did."),  # folded like dedupe: case, spacing, punctuation
        chat("Who made the kantele?", "Väinämöinen."),
        chat("Who made the kantele?", "Väinämöinen.", "Q1!", "a1"),  # the last user turn is the question
        chat("Mistress of Pohjola?", "Louhi."),  # seen only as an answer in training
        chat("Q1", "a1", "Who made the kantele?", "Väinämöinen."),  # seen only in an earlier turn
    ]
    assert find_overlap(train, validation) == [1, 3]
    assert find_overlap([], validation) == [] and find_overlap(train, []) == []
    with pytest.raises(DataError, match="example 1 has no user turn"):
        find_overlap(train, [{"messages": [ASSISTANT]}])


def test_find_overlap_catches_a_question_dedupe_keeps_twice(tmp_path):
    rows = [GOOD, {"prompt": "Who forged the Sampo?", "response": "Väinämöinen asked him to."}]
    examples = load_examples(write_rows(tmp_path, "jsonl", rows)).examples
    assert len(examples) == 2  # different answers, so both are kept
    train, validation = split_examples(examples, 0.5, seed=0)
    assert find_overlap(train, validation) == [1]


def test_write_jsonl_round_trip_is_atomic(tmp_path):
    examples = [dict(EXAMPLES[0], key_facts=["Väinämöinen", "line\u2028separator"])] + EXAMPLES[1:]
    path = tmp_path / "out" / "train.jsonl"
    write_jsonl(examples, path)
    assert read_jsonl(path) == examples
    assert load_examples(path).examples == examples  # what we write is itself a loadable data file
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]
    with pytest.raises(TypeError):
        write_jsonl([{"messages": object()}], path)  # a failed write leaves the old file whole
    assert read_jsonl(path) == examples
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = write_lines(tmp_path, [GOOD, '{"cut": '], "cut.jsonl")
    with pytest.raises(DataError, match=r"cut\.jsonl line 2"):
        read_jsonl(path)


def test_fingerprint_is_stable_and_changes_with_content():
    first = fingerprint_examples(EXAMPLES)
    assert len(first) == 64 and first == fingerprint_examples([dict(reversed(list(e.items()))) for e in EXAMPLES])
    changed = [
        dict(EXAMPLES[0], messages=[EXAMPLES[0]["messages"][0], {"role": "assistant", "content": "other"}])
    ] + EXAMPLES[1:]
    assert fingerprint_examples(changed) != first
    assert fingerprint_examples(EXAMPLES[::-1]) != first


def test_user_prompts_and_reference_answers_take_the_last_turns():
    example = {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "first"},
            ASSISTANT,
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "last"},
        ]
    }
    assert user_prompts([example, EXAMPLES[0]]) == ["second", "q0"]
    assert reference_answers([example, EXAMPLES[0]]) == ["last", "a0"]
    with pytest.raises(DataError, match="example 1 has no assistant turn"):
        reference_answers([{"messages": [USER]}])


# --- several files --------------------------------------------------------------------------------


def test_multi_file_loading_numbers_rows_per_file_and_dedupes_across(tmp_path):
    a = write_rows(tmp_path, "jsonl", [GOOD, SHAPES["question/answer"]], name="a")
    b = write_rows(tmp_path, "csv", [{"prompt": "Who is Louhi?", "response": "Mistress of Pohjola."}, GOOD], name="b")
    loaded = load_examples([a, b])
    assert loaded.report.kept == 2 and loaded.report.duplicates_removed == 2
    assert loaded.report.duplicate_rows == [2, 2]
    assert loaded.report.notes == [
        "a.jsonl row 2: duplicate of a.jsonl row 1 — removed",
        "b.csv row 2: duplicate of a.jsonl row 1 — removed",
    ]


def test_multi_file_errors_name_the_file(tmp_path):
    a = write_rows(tmp_path, "jsonl", [GOOD], name="a")
    b = write_rows(
        tmp_path,
        "csv",
        [GOOD, SHAPES["prompt/response"] | {"prompt": "Other?"}, {"prompt": "x", "response": ""}],
        name="b",
    )
    with pytest.raises(DataError) as caught:
        load_examples([a, b])
    [error] = caught.value.errors
    assert (error.file, error.row, error.field) == ("b.csv", 3, "response")
    assert "b.csv row 3: response: empty" in str(caught.value)
    with pytest.raises(DataError, match="no data files"):
        load_examples([])
    bad = tmp_path / "c.csv"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match=r"c\.csv: file is not UTF-8"):
        load_examples([a, bad])


def test_same_named_files_are_told_apart_by_path(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write_rows(tmp_path / "x", "jsonl", [GOOD])
    b = write_rows(tmp_path / "y", "jsonl", [{"prompt": "x"}])
    with pytest.raises(DataError) as caught:
        load_examples([a, b])
    assert caught.value.errors[0].file == str(b)


def test_tuning_data_imports_only_the_standard_library():
    heavy = ("gradio", "torch", "transformers", "datasets")
    code = f"import sys, tuning.data.examples; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert out.stdout.strip() == "[]"


def test_data_files_sits_below_the_other_data_modules():
    code = ("import sys, tuning.data.files; "
            "print(sorted(m for m in sys.modules if m.startswith('tuning.')"  # modules, not the packages above them
            " and not sys.modules[m].__spec__.submodule_search_locations))")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert out.stdout.strip() == "['tuning.data.files', 'tuning.errors']"  # errors: the error base, importing nothing


# --- property: any JSONL of dict rows either loads or raises DataError ----------------------------

KNOWN_KEYS = [
    "prompt",
    "Response",
    "question",
    "answer",
    "instruction",
    "input",
    "output",
    "completion",
    "conversations",
    "messages",
    "system",
    "key_facts",
    "source",
    "id",
    "role",
    "content",
    "from",
    "value",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["user", "assistant", "system", "human", "gpt", " ", ""]),
)
turns = st.dictionaries(st.sampled_from(["role", "content", "from", "value", "Role"]), scalars, max_size=3)
values = st.one_of(scalars, st.lists(st.one_of(scalars, turns), max_size=4), turns)
rows = st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=6)), values, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, min_size=1, max_size=4))
def test_any_dict_rows_load_or_raise_data_error(batch):
    with tempfile.TemporaryDirectory() as folder:
        path = write_lines(Path(folder), batch)
        try:
            loaded = load_examples(path, max_tokens=5, count_tokens=len)
        except DataError as e:
            assert str(e)
            return
    for example in loaded.examples:
        roles = [m["role"] for m in example["messages"]]
        assert roles[-1] == "assistant" and "user" in roles
        assert all(isinstance(m["content"], str) and m["content"] for m in example["messages"])
    report = loaded.report
    assert report.rows_read == report.kept + report.empty + report.duplicates_removed
