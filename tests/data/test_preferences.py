"""Tests for tuning.data.preferences: every accepted shape in every file format, row-numbered errors reported
together, duplicates counted, writing and fingerprinting."""

import csv
import json
from pathlib import Path

import pytest

from tuning.data.files import DataError, UploadLimits
from tuning.data.preferences import fingerprint_preferences, load_preferences, write_preferences

Q, GOOD, BAD = "Who forged the Sampo?", "Ilmarinen forged it.", "Väinämöinen forged it."
EXPECTED = {"prompt": [{"role": "user", "content": Q}], "chosen": [{"role": "assistant", "content": GOOD}],
            "rejected": [{"role": "assistant", "content": BAD}]}


def turn(role, content):
    return {"role": role, "content": content}


# One row of every accepted shape, each meaning EXPECTED.
SHAPES = {
    "text": {"prompt": Q, "chosen": GOOD, "rejected": BAD},
    "question synonym": {"question": Q, "chosen": GOOD, "rejected": BAD},
    "answers as turns": {"prompt": Q, "chosen": [turn("assistant", GOOD)], "rejected": [turn("assistant", BAD)]},
    # UltraFeedback-binarized: a text prompt, chosen/rejected the whole conversation
    "ultrafeedback": {"prompt": Q, "prompt_id": "abc", "chosen": [turn("user", Q), turn("assistant", GOOD)],
                      "rejected": [turn("user", Q), turn("assistant", BAD)], "score_chosen": 8.0},
    "prompt as turns": {"prompt": [turn("user", Q)], "chosen": [turn("user", Q), turn("assistant", GOOD)],
                        "rejected": [turn("assistant", BAD)]},
    # Anthropic HH as message lists: no prompt, the shared turns are the prompt
    "conversations": {"chosen": [turn("user", Q), turn("assistant", GOOD)],
                      "rejected": [turn("user", Q), turn("assistant", BAD)]},
    "sharegpt turns": {"chosen": [{"from": "human", "value": Q}, {"from": "gpt", "value": GOOD}],
                       "rejected": [{"from": "human", "value": Q}, {"from": "gpt", "value": BAD}]},
}


def write_rows(folder: Path, fmt: str, rows: list, name: str = "prefs") -> Path:
    """Write rows as .jsonl, a .json array, or .csv (lists as JSON text in their cells)."""
    if fmt == "jsonl":
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path = folder / f"{name}.json"
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        path = folder / f"{name}.csv"
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in rows:
                writer.writerow([json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                                 for v in (r.get(c, "") for c in columns)])
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_in_every_format_loads_as_trl_rows(tmp_path, shape, fmt):
    loaded = load_preferences(write_rows(tmp_path, fmt, [SHAPES[shape]]))
    assert loaded.rows == [EXPECTED]
    assert loaded.report.kept == 1 and loaded.report.rows_read == 1


def test_a_multi_turn_prompt_with_a_system_turn_is_kept_whole(tmp_path):
    turns = [turn("system", "Answer about the Kalevala."), turn("user", "Who is Louhi?"),
             turn("assistant", "The mistress of Pohjola."), turn("user", Q)]
    rows = [{"chosen": [*turns, turn("assistant", GOOD)], "rejected": [*turns, turn("assistant", BAD)]},
            {"prompt": Q, "chosen": [*turns, turn("assistant", GOOD)], "rejected": [turn("assistant", BAD)],
             "provenance": {"source": "hh"}}]
    loaded = load_preferences(write_rows(tmp_path, "jsonl", rows))
    assert loaded.rows == [{"prompt": turns, "chosen": [turn("assistant", GOOD)], "rejected": [turn("assistant", BAD)]}]
    assert loaded.report.duplicates_removed == 1  # the second row is the same pair, its provenance aside


def test_the_report_counts_shapes_empty_rows_duplicates_and_ignored_fields(tmp_path):
    rows = [SHAPES["text"], {"prompt": "", "chosen": "", "rejected": ""}, SHAPES["ultrafeedback"],
            {"prompt": "Who rules Pohjola?", "chosen": "Louhi.", "rejected": "Joukahainen.", "provenance": "mine"}]
    loaded = load_preferences(write_rows(tmp_path, "jsonl", rows))
    report = loaded.report
    assert (report.rows_read, report.kept, report.empty, report.duplicates_removed) == (4, 2, 1, 1)
    assert report.empty_rows == [2] and report.duplicate_rows == [3]
    assert report.notes == ["row 2: every field is blank — skipped", "row 3: duplicate of row 1 — removed"]
    assert report.summary() == "read 4 preference rows: 2 kept, 1 empty, 1 duplicate removed"
    assert loaded.rows[1]["provenance"] == "mine"
    other = load_preferences(write_rows(tmp_path, "jsonl", [SHAPES["ultrafeedback"]], "uf")).report
    assert other.shape_counts == {"messages": 1}
    assert other.summary().endswith("; ignored fields: prompt_id (1), score_chosen (1)")


def test_an_alpaca_input_joins_the_instruction(tmp_path):
    row = {"instruction": "Answer briefly.", "input": Q, "chosen": GOOD, "rejected": BAD}
    assert load_preferences(write_rows(tmp_path, "jsonl", [row])).rows[0]["prompt"] == [
        turn("user", f"Answer briefly.\n\n{Q}")]


def test_csv_text_that_only_looks_like_a_list_stays_text(tmp_path):
    row = {"prompt": Q, "chosen": "[1] Ilmarinen, the smith.", "rejected": BAD}
    assert load_preferences(write_rows(tmp_path, "csv", [row])).rows[0]["chosen"] == [
        turn("assistant", "[1] Ilmarinen, the smith.")]


# Each broken row, its 1-based row number in the file below, the field the error names, and words of the message.
BROKEN = [
    ({"prompt": Q, "chosen": GOOD}, "rejected", "missing 'rejected'"),
    ({"chosen": GOOD, "rejected": BAD}, "prompt", "missing 'prompt'"),
    ({"prompt": 7, "chosen": GOOD, "rejected": BAD}, "prompt", "expected text or a list of turns, got a number"),
    ({"prompt": Q, "chosen": "  ", "rejected": BAD}, "chosen", "empty — write the better answer"),
    ({"prompt": Q, "chosen": GOOD, "rejected": GOOD}, "rejected", "the same answer as chosen"),
    ({"prompt": Q, "chosen": [turn("user", Q)], "rejected": BAD}, "chosen[0].role", "end chosen with the assistant"),
    ({"chosen": [turn("user", Q), turn("assistant", GOOD), turn("user", "And?")], "rejected": [turn("user", Q),
      turn("assistant", BAD)]}, "chosen[2].role", "end chosen with the assistant's answer"),
    ({"prompt": [turn("user", Q), turn("assistant", GOOD)], "chosen": GOOD, "rejected": BAD}, "prompt[1].role",
     "end it with the user's question"),
    ({"chosen": [turn("user", Q), turn("assistant", GOOD)], "rejected": [turn("user", "Who?"), turn("assistant", BAD)]},
     "rejected[0]", "must share every turn before their answers"),
    ({"prompt": "Another question?", "chosen": [turn("user", Q), turn("assistant", GOOD)], "rejected": BAD}, "prompt",
     "differs from the last user turn"),
    ({"prompt": Q, "question": Q, "chosen": GOOD, "rejected": BAD}, "(row)", "holds both 'prompt' and 'question'"),
    ({"prompt": Q, "chosen": [{"role": "judge", "content": GOOD}], "rejected": BAD}, "chosen[0].role", "unknown role"),
    ({"prompt": Q, "chosen": [{"role": "assistant", "content": ""}], "rejected": BAD}, "chosen[0].content", "empty"),
    ({"prompt": Q, "response": GOOD}, "chosen", "looks like a question and its answer"),
]


def test_every_broken_row_is_reported_together_with_its_row_field_and_fix(tmp_path):
    rows = [SHAPES["text"]] + [row for row, _, _ in BROKEN]
    with pytest.raises(DataError) as caught:
        load_preferences(write_rows(tmp_path, "jsonl", rows))
    errors = caught.value.errors
    assert [(e.row, e.field) for e in errors] == [(n, f) for n, (_, f, _) in enumerate(BROKEN, 2)]
    for error, (_, _, words) in zip(errors, BROKEN, strict=True):
        assert words in error.message
    assert str(caught.value).startswith(f"prefs.jsonl: {len(BROKEN)} rows can't be used — fix them and load again")
    assert "row 2: rejected: missing 'rejected'" in str(caught.value)


def test_errors_of_several_files_name_the_file(tmp_path):
    good = write_rows(tmp_path, "jsonl", [SHAPES["text"]], "good")
    bad = write_rows(tmp_path, "csv", [SHAPES["text"], {"prompt": Q, "chosen": GOOD, "rejected": GOOD}], "bad")
    with pytest.raises(DataError) as caught:
        load_preferences([good, bad])
    assert "bad.csv row 2: rejected: the same answer as chosen" in str(caught.value)


def test_a_file_that_is_not_json_and_a_file_over_the_limit_are_refused(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(DataError, match="row 2: \\(row\\): not valid JSON"):
        load_preferences(broken)
    with pytest.raises(DataError, match="over the upload limit"):
        load_preferences(write_rows(tmp_path, "jsonl", [SHAPES["text"]]), limits=UploadLimits(max_bytes=10))
    with pytest.raises(DataError, match="every row is blank"):
        load_preferences(write_rows(tmp_path, "jsonl", [{"prompt": "", "chosen": "", "rejected": ""}], "blank"))


def test_a_lone_conversation_pair_in_a_json_file_is_one_row(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(SHAPES["conversations"]), encoding="utf-8")
    assert load_preferences(path).rows == [EXPECTED]


def test_written_rows_load_back_unchanged_and_fingerprint_stably(tmp_path):
    rows = load_preferences(write_rows(tmp_path, "jsonl", list(SHAPES.values())[:1] + [
        {"prompt": "Who rules Pohjola?", "chosen": "Louhi.", "rejected": "Joukahainen.", "provenance": {"a": 1}}])).rows
    write_preferences(rows, tmp_path / "out" / "clean.jsonl")
    again = load_preferences(tmp_path / "out" / "clean.jsonl")
    assert again.rows == rows and again.report.shape_counts == {"messages": 2}
    assert fingerprint_preferences(again.rows) == fingerprint_preferences(rows)
    assert fingerprint_preferences(rows[:1]) != fingerprint_preferences(rows)
    assert len(fingerprint_preferences(rows)) == 64
