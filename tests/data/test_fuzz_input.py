"""Bad input (issue 8): 10,000 generated files through the data importer and 10,000 generated replies through
the QA parser, none raising anything unexpected; then the hand-picked cases the fuzzing can't reach or that
tests/data/test_data.py does not already cover (empty file, BOM, non-UTF-8, CSV quoting and mixed shapes are there)."""

import json

import pytest
from fuzz_inputs import CASES, HAND_CASES, check_import, check_rejection, run_importer_fuzz, run_parser_fuzz

from tuning.data.examples import DataError, load_examples
from tuning.data.workspace import new_workspace, prepare_dataset

PAIR = {"prompt": "Who forged the Sampo?", "response": "Ilmarinen."}
ONE_MB = 1024 * 1024


def test_importer_fuzz_loads_or_names_row_and_fix(tmp_path_factory):
    outcomes, _ = run_importer_fuzz(tmp_path_factory.mktemp("fuzz"))
    assert sum(outcomes.values()) >= CASES, outcomes
    assert min(outcomes["loaded"], outcomes["rejected: rows"], outcomes["rejected: file"]) > CASES // 20, outcomes


def test_parser_fuzz_gives_pairs_or_a_parse_error():
    outcomes, _ = run_parser_fuzz()
    assert sum(outcomes.values()) >= CASES, outcomes
    assert outcomes["pairs"] > CASES // 20 and outcomes["rejected"] > CASES // 20, "both outcomes were reached"


# --- by hand -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,suffix,data,expected", HAND_CASES, ids=[case[0] for case in HAND_CASES])
def test_the_issues_hand_cases(tmp_path, name, suffix, data, expected):
    assert check_import(tmp_path, suffix, data) == expected  # bench/reliability_input.py reports these too


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_one_megabyte_field_loads_whole(tmp_path, suffix):
    answer = "Ilmarinen " * (ONE_MB // 10)
    path = tmp_path / f"big{suffix}"
    if suffix == ".csv":
        path.write_text(f'prompt,response\nWho forged the Sampo?,"{answer}"\n', encoding="utf-8")
    else:
        row = dict(PAIR, response=answer)
        path.write_text(json.dumps([row] if suffix == ".json" else row), encoding="utf-8")
    [example] = load_examples(path).examples
    assert example["messages"][1]["content"] == answer.strip()  # csv's default 128 KiB cell limit no longer bites


@pytest.mark.parametrize("document,words", [
    ({"title": "Kalevala", "runes": 50}, ["can't find the rows", '{"data": [...]}']),
    ({"meta": {"title": "x"}, "notes": "y"}, ["can't find the rows"]),
    ("just some text", ["expected an array of rows, got text", "write ["]),
    (42, ["got a number"]),
    (None, ["got null"]),
    ({}, ["file has no rows — add at least one"]),
    ({"train": [], "test": []}, ["file has no rows"]),
])
def test_json_document_that_is_not_rows(tmp_path, document, words):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_examples(path)
    check_rejection(caught.value, path.name)
    assert all(word in str(caught.value) for word in words), caught.value


def test_duplicate_only_file_keeps_one_and_says_what_was_removed(tmp_path):
    path = tmp_path / "copies.jsonl"
    path.write_text((json.dumps(PAIR) + "\n") * 500, encoding="utf-8")
    loaded = load_examples(path)
    assert (loaded.report.kept, loaded.report.duplicates_removed) == (1, 499)
    assert loaded.report.notes[0] == "row 2: duplicate of row 1 — removed" and len(loaded.report.notes) == 499
    prepared = prepare_dataset(new_workspace(tmp_path / "ws"), [path], 0.1, seed=0)
    assert (prepared.train_count, prepared.validation_count) == (1, 0)  # one example can't also be held out


@pytest.mark.parametrize("name,text,where", [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "deep.json: not valid JSON (nested too deeply"),
    ("deep.jsonl", json.dumps(PAIR) + "\n" + "[" * 100_000 + "\n", "row 2: (row): not valid JSON: nested too deeply"),
    ("deep.csv", "messages\n" + "[" * 100_000 + "\n", "row 1: messages: not valid JSON (nested too deeply"),
])
def test_nesting_too_deep_for_python_is_a_data_error(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:  # was RecursionError: the upload crashed the handler
        load_examples(path)
    assert where in str(caught.value)
    check_rejection(caught.value, name)


@pytest.mark.parametrize("row,field", [
    ({"prompt": "Who forged the Sampo?\\ud800", "response": "Ilmarinen."}, "prompt"),
    ({"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "\\udfff"}]},
     "messages[1].content"),
    ({"prompt": "Q?", "response": "A.", "source": ["Runo \\ud83d"]}, "source"),
])
def test_lone_surrogate_escape_is_a_row_error_not_a_crash_when_saving(tmp_path, row, field):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row).replace("\\\\u", "\\u") + "\n", encoding="utf-8")  # the escape, raw in the file
    with pytest.raises(DataError) as caught:  # it used to load, then prepare_dataset died writing UnicodeEncodeError
        prepare_dataset(new_workspace(tmp_path / "ws"), [path], 0.1, seed=0)
    [error] = caught.value.errors
    assert (error.row, error.field) == (1, field) and "half of a character pair" in error.message
    check_rejection(caught.value, path.name)


def test_a_real_emoji_escape_pair_is_fine(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "Sampo \\ud83d\\ude00?", "response": "Yes."}\n', encoding="utf-8")
    assert load_examples(path).examples[0]["messages"][0]["content"] == "Sampo \U0001f600?"


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\n\n", b"\x00\x00\x00", b"\xff\xfe{\x00}\x00"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_bom_only_nul_and_utf16_files_are_rejected_with_a_fix(tmp_path, data, suffix):
    assert check_import(tmp_path, suffix, data).startswith("rejected")
