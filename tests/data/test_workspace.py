"""A visitor's workspace: uploads kept byte for byte, cleaned split written, bad files change nothing."""

import pytest
from helpers import TINY_TRAIN, write_jsonl

from tuning.data.examples import DataError, read_jsonl
from tuning.data.workspace import (
    UPLOADS_DIR,
    kalevala_files,
    keep_uploads,
    new_workspace,
    prepare_dataset,
)


def test_uploads_are_kept_untouched_and_split_is_written(tmp_path):
    source = write_jsonl(tmp_path / "mine.jsonl", TINY_TRAIN)
    workspace = new_workspace(tmp_path / "ws")
    kept = keep_uploads(workspace, [source])
    assert kept[0].read_bytes() == source.read_bytes() and kept[0].parent.name == UPLOADS_DIR
    prepared = prepare_dataset(workspace, kept, validation_fraction=0.25, seed=1)
    assert prepared.train_count + prepared.validation_count == len(TINY_TRAIN)
    assert len(read_jsonl(prepared.train_file)) == prepared.train_count


def test_invalid_upload_leaves_the_previous_dataset_in_place(tmp_path):
    workspace = new_workspace(tmp_path / "ws")
    good = prepare_dataset(workspace, [write_jsonl(tmp_path / "a.jsonl", TINY_TRAIN)], 0.25, seed=1)
    before = good.train_file.read_bytes()
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "only a prompt"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="row 1"):
        prepare_dataset(workspace, [bad], 0.25, seed=1)
    assert good.train_file.read_bytes() == before


def test_workspaces_are_separate_and_randomly_named(tmp_path):
    first, second = new_workspace(tmp_path), new_workspace(tmp_path)
    assert first != second and len(first.name) == 32


def test_kalevala_example_meets_its_promises():
    train, validation = kalevala_files()
    train_rows, validation_rows = read_jsonl(train), read_jsonl(validation)
    assert len(train_rows) >= 330 and len(validation_rows) >= 40
    assert all(row.get("key_facts") for row in validation_rows)
    train_prompts = {row["prompt"].casefold().strip() for row in train_rows}
    assert not any(row["prompt"].casefold().strip() in train_prompts for row in validation_rows)
    words = (train.parent / "source.md").read_text(encoding="utf-8").split()
    assert len(words) >= 3000


def test_a_shared_app_deletes_workspaces_left_idle_and_keeps_the_active_ones(tmp_path, monkeypatch):
    import os
    import time

    from tuning.data.workspace import new_workspace, sweep_idle_workspaces

    idle, active = new_workspace(tmp_path), new_workspace(tmp_path)
    (idle / "uploads" / "old.jsonl").write_text("{}")
    two_days_ago = time.time() - 2 * 86400
    for path in [idle, idle / "uploads", idle / "uploads" / "old.jsonl"]:
        os.utime(path, (two_days_ago, two_days_ago))
    assert sweep_idle_workspaces(tmp_path, 86400) == [idle]
    assert not idle.exists() and active.exists()

    again = new_workspace(tmp_path)  # locally nothing is swept, however old
    os.utime(again, (two_days_ago, two_days_ago))
    os.utime(again / "uploads", (two_days_ago, two_days_ago))
    monkeypatch.delenv("KANTELE_SHARED", raising=False)
    new_workspace(tmp_path)
    assert again.exists()
    monkeypatch.setenv("KANTELE_SHARED", "1")
    new_workspace(tmp_path)
    assert not again.exists() and active.exists()
