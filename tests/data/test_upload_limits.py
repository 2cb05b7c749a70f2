"""Upload limits: bytes and rows per file, from KANTELE_MAX_UPLOAD_MB / KANTELE_MAX_ROWS or keywords; the message
names the file, its size or row count, the limit and the fix, and the Data tab shows it."""

import os
import time

import pytest
from helpers import TINY_TRAIN, write_jsonl

from tuning.data.examples import DataError, UploadLimits, load_examples
from tuning.data.files import (
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_UPLOAD_MB,
    MAX_ROWS_ENV,
    MAX_UPLOAD_MB_ENV,
    MB,
    upload_limits,
)
from tuning.data.workspace import UPLOADS_DIR, keep_uploads, new_workspace, prepare_dataset
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_ENV


@pytest.fixture(autouse=True)
def no_limit_settings(monkeypatch):
    """Each test starts from the default limits of a local app, whatever the machine's environment says."""
    for name in [MAX_UPLOAD_MB_ENV, MAX_ROWS_ENV, SHARED_ENV, "SYSTEM", "SPACE_ID"]:
        monkeypatch.delenv(name, raising=False)
    for name in [name for name in os.environ if name.startswith(CAP_ENV_PREFIX)]:
        monkeypatch.delenv(name)


def test_defaults_environment_and_arguments(monkeypatch):
    assert upload_limits() == UploadLimits(DEFAULT_MAX_UPLOAD_MB * MB, DEFAULT_MAX_ROWS)
    assert (DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_ROWS) == (50, 100_000)
    monkeypatch.setenv(MAX_UPLOAD_MB_ENV, "0.5")
    monkeypatch.setenv(MAX_ROWS_ENV, "7")
    assert upload_limits() == UploadLimits(MB // 2, 7)
    assert upload_limits(max_mb=2, max_rows=3) == UploadLimits(2 * MB, 3)  # arguments win over the environment


@pytest.mark.parametrize("name,value", [(MAX_UPLOAD_MB_ENV, "lots"), (MAX_UPLOAD_MB_ENV, "-1"),
                                        (MAX_UPLOAD_MB_ENV, "nan"), (MAX_UPLOAD_MB_ENV, "inf"),
                                        (MAX_ROWS_ENV, "1e5"), (MAX_ROWS_ENV, "0")])
def test_a_bad_setting_names_the_variable_and_the_fix(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(DataError, match=f"{name}='{value}' is not a positive number — set it to"):
        upload_limits()


def test_file_over_the_size_limit_names_size_limit_and_fix(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", TINY_TRAIN)
    size = path.stat().st_size
    with pytest.raises(DataError) as caught:
        load_examples(path, limits=UploadLimits(max_bytes=size - 1))
    assert str(caught.value) == (f"big.jsonl: {size:,} bytes, over the upload limit of {size - 1:,} bytes per file "
                                 "— split it into smaller files, or ask whoever runs the app to raise "
                                 f"{MAX_UPLOAD_MB_ENV}")
    assert load_examples(path, limits=UploadLimits(max_bytes=size)).report.kept == len(TINY_TRAIN)


def test_size_is_checked_before_reading(tmp_path):
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:
        handle.truncate(4 * 1024 * MB)  # 4 GB, sparse: reading it would take seconds and all the memory
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"huge\.csv: 4,096\.0 MB, over the upload limit of 50\.0 MB per file — "):
        load_examples(huge, limits=upload_limits())
    with pytest.raises(DataError, match="4,096.0 MB"):
        keep_uploads(new_workspace(tmp_path / "ws"), [huge])
    assert time.perf_counter() - started < 1
    assert not any((tmp_path / "ws").rglob("*.csv")), "nothing is copied when a file is over the limit"


def test_file_with_too_many_rows(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", TINY_TRAIN)
    rows = len(TINY_TRAIN)
    with pytest.raises(DataError) as caught:
        load_examples(path, limits=UploadLimits(max_rows=rows - 1))
    assert str(caught.value) == (f"many.jsonl: {rows} rows, over the limit of {rows - 1} rows per file — split it "
                                 f"into smaller files, or ask whoever runs the app to raise {MAX_ROWS_ENV}")
    assert load_examples(path, limits=UploadLimits(max_rows=rows)).report.kept == rows
    assert load_examples(path).report.kept == rows  # the loader itself has no limits: the CLI reads local files


def test_row_limit_counts_rows_that_are_errors_and_csv_rows(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\nnot json\n[1]\n', encoding="utf-8")
    with pytest.raises(DataError, match="mixed.jsonl: 3 rows, over the limit of 2 rows"):
        load_examples(path, limits=UploadLimits(max_rows=2))
    table = tmp_path / "table.csv"
    table.write_text("prompt,response\n" + "".join(f"q{i},a{i}\n" for i in range(1001)), encoding="utf-8")
    with pytest.raises(DataError, match="table.csv: 1,001 rows, over the limit of 1,000 rows"):
        load_examples(table, limits=UploadLimits(max_rows=1000))


def test_workspace_applies_the_environment_limits(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "mine.jsonl", TINY_TRAIN)
    workspace = new_workspace(tmp_path / "ws")
    monkeypatch.setenv(MAX_ROWS_ENV, "3")
    kept = keep_uploads(workspace, [source])
    with pytest.raises(DataError, match=f"over the limit of 3 rows per file — .* raise {MAX_ROWS_ENV}"):
        prepare_dataset(workspace, kept, 0.25, seed=1)
    assert prepare_dataset(workspace, kept, 0.25, seed=1, limits=UploadLimits(max_rows=8)).train_count == 6
    monkeypatch.setenv(MAX_UPLOAD_MB_ENV, "0.0001")  # about 100 bytes
    with pytest.raises(DataError, match="mine.jsonl: .* bytes, over the upload limit of 104 bytes per file"):
        keep_uploads(workspace, [source])
    assert sorted(p.name for p in (workspace / UPLOADS_DIR).iterdir()) == ["01-mine.jsonl"]


def test_the_data_tab_shows_the_limit_message(tmp_path, monkeypatch):
    from ui import data_tab

    monkeypatch.setattr(data_tab, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(data_tab, "count_tokens_with", lambda: lambda messages: 1)
    source = write_jsonl(tmp_path / "mine.jsonl", TINY_TRAIN)
    state = data_tab.empty_dataset_state()
    monkeypatch.setenv(MAX_UPLOAD_MB_ENV, "0.0001")
    new_state, _, message, *_ = data_tab.load_uploads([str(source)], 0.25, state)
    assert new_state is state and "### Nothing was loaded: fix this" in message
    assert ("over the upload limit of 104 bytes per file — split it into smaller files, or ask whoever runs the "
            f"app to raise {MAX_UPLOAD_MB_ENV}") in message
    monkeypatch.delenv(MAX_UPLOAD_MB_ENV)
    monkeypatch.setenv(MAX_ROWS_ENV, "2")
    _, _, message, *_ = data_tab.load_uploads([str(source)], 0.25, state)
    assert "mine.jsonl: 8 rows, over the limit of 2 rows per file — split" in message
    monkeypatch.delenv(MAX_ROWS_ENV)
    loaded_state, _, message, *_ = data_tab.load_uploads([str(source)], 0.25, state)
    assert message == "" and loaded_state["train_file"]
