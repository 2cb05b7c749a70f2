"""Nothing lost, nothing half-written (issue 8): files and folders are built beside their target and renamed
into place, so a crash, a kill or a full disk mid-write leaves the previous version, never half a file that
the app then loads. The adapter is the big one: has_adapter() and the chat trust adapter/adapter_config.json."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY_TRAIN, write_jsonl

from tuning.atomic import staged_dir, staged_file
from tuning.config import write_text_atomic
from tuning.data import workspace
from tuning.runs.files import ADAPTER_DIR, append_metrics, has_adapter, read_metrics, write_json
from tuning.training.train import save_adapter

DISK_FULL = OSError(28, "No space left on device")


def leftovers(folder: Path) -> list[str]:
    """Hidden temp files or folders a write left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_staged_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "eval.json"
    write_json(path, {"version": 1})
    with pytest.raises(OSError), staged_file(path) as temp:
        temp.write_text('{"version": 2, "rows": [', encoding="utf-8")  # half written, then the disk fills
        raise DISK_FULL
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1} and leftovers(tmp_path) == []
    write_text_atomic(path, '{"version": 3}\n')
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 3} and leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_staged_dir_swaps_a_whole_folder(tmp_path):
    target = tmp_path / "merged"
    with staged_dir(target) as staging:
        (staging / "a.txt").write_text("first", encoding="utf-8")
        (staging / "old-only.txt").write_text("x", encoding="utf-8")
    with pytest.raises(OSError), staged_dir(target) as staging:
        (staging / "a.txt").write_text("sec", encoding="utf-8")
        raise DISK_FULL
    assert (target / "a.txt").read_text(encoding="utf-8") == "first" and leftovers(tmp_path) == []
    with staged_dir(target) as staging:
        (staging / "a.txt").write_text("second", encoding="utf-8")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old folder's files are gone with it
    assert (target / "a.txt").read_text(encoding="utf-8") == "second" and leftovers(tmp_path) == []


class Saver:
    """Stands in for a PEFT model / tokenizer: writes the config first, like save_pretrained, then maybe fails."""

    def __init__(self, tag: str, fail: BaseException | None = None):
        self.tag, self.fail = tag, fail

    def save_pretrained(self, folder, **kwargs):
        (Path(folder) / "adapter_config.json").write_text(json.dumps({"tag": self.tag}), encoding="utf-8")
        if self.fail:
            (Path(folder) / "adapter_model.safetensors").write_bytes(b"\0" * 100)  # half the weights
            raise self.fail
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"\1" * 1000)


class Tokenizer:
    def save_pretrained(self, folder, **kwargs):
        (Path(folder) / "tokenizer_config.json").write_text("{}", encoding="utf-8")


def adapter_tag(run_dir: Path) -> str:
    return json.loads((run_dir / ADAPTER_DIR / "adapter_config.json").read_text(encoding="utf-8"))["tag"]


def test_adapter_save_that_fails_midway_leaves_no_adapter(tmp_path):
    with pytest.raises(OSError):
        save_adapter(Saver("new", fail=DISK_FULL), Tokenizer(), tmp_path / ADAPTER_DIR)
    assert not has_adapter(tmp_path) and leftovers(tmp_path) == []


def test_adapter_save_that_fails_midway_keeps_the_previous_adapter(tmp_path):
    save_adapter(Saver("first run"), Tokenizer(), tmp_path / ADAPTER_DIR)  # e.g. a stopped run...
    with pytest.raises(KeyboardInterrupt):  # ...resumed, and interrupted while saving again
        save_adapter(Saver("resumed", fail=KeyboardInterrupt()), Tokenizer(), tmp_path / ADAPTER_DIR)
    assert has_adapter(tmp_path) and adapter_tag(tmp_path) == "first run"
    assert (tmp_path / ADAPTER_DIR / "adapter_model.safetensors").read_bytes() == b"\1" * 1000
    save_adapter(Saver("resumed"), Tokenizer(), tmp_path / ADAPTER_DIR)
    assert adapter_tag(tmp_path) == "resumed" and leftovers(tmp_path) == []


KILLED_MID_SAVE = """
import json, os, sys
from pathlib import Path
from tuning.training.train import save_adapter

class Killed:
    def save_pretrained(self, folder, **kwargs):
        (Path(folder) / "adapter_config.json").write_text(json.dumps({"tag": "killed"}))
        os._exit(9)  # like SIGKILL or a power cut: no except, no finally runs

save_adapter(Killed(), None, Path(sys.argv[1]))
"""


@pytest.mark.parametrize("earlier_adapter", [False, True])
def test_adapter_save_killed_midway_is_never_loaded_as_an_adapter(tmp_path, earlier_adapter):
    if earlier_adapter:
        save_adapter(Saver("earlier"), Tokenizer(), tmp_path / ADAPTER_DIR)
    result = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path / ADAPTER_DIR)], cwd=REPO)
    assert result.returncode == 9
    assert has_adapter(tmp_path) == earlier_adapter
    if earlier_adapter:
        assert adapter_tag(tmp_path) == "earlier"
    [staging] = leftovers(tmp_path)  # the half adapter sits in a hidden folder nothing reads
    assert staging.startswith(f".{ADAPTER_DIR}.")


def test_upload_copy_that_fails_midway_keeps_nothing(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "mine.jsonl", TINY_TRAIN)
    folder = workspace.new_workspace(tmp_path / "ws")

    def copy_half(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:50])
        raise DISK_FULL

    monkeypatch.setattr(workspace.shutil, "copyfile", copy_half)
    with pytest.raises(OSError):
        workspace.keep_uploads(folder, [source])
    assert list((folder / workspace.UPLOADS_DIR).iterdir()) == []
    monkeypatch.undo()
    [kept] = workspace.keep_uploads(folder, [source])
    assert kept.read_bytes() == source.read_bytes()  # the original, byte for byte, beside the cleaned set


def test_metrics_line_cut_by_a_crash_is_skipped(tmp_path):
    append_metrics(tmp_path, {"step": 1, "loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 2, "lo')  # the process died mid-line
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]


def test_training_curves_are_written_atomically(tmp_path):
    from tuning.training.curves import LOSS_PNG, save_training_curves

    for step in range(1, 4):
        append_metrics(tmp_path, {"step": step, "loss": 3.0 / step, "learning_rate": 0.001})
    written = save_training_curves(tmp_path)
    assert [p.name for p in written] == [LOSS_PNG, "learning_rate.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written) and leftovers(tmp_path) == []

