"""Importing an adapter trained elsewhere: what becomes a run, and every upload that is refused, with its fix.
(The round trip with a real cluster-trained adapter answering in Chat is in tests/portable/test_cluster_roundtrip.py.)"""

import json
import zipfile

import pytest
from cluster_runs import lora_adapter, make_run_folder, zip_folder

from tuning.config import EMBEDDED_MODEL, load_recipe
from tuning.data.files import UploadLimits
from tuning.portable import adapter_import
from tuning.portable.adapter_import import AdapterImportError, import_adapter, portable_base_name
from tuning.runs.files import COMPLETED, CONFIG_FILE, EVAL_FILE, METRICS_FILE, has_adapter, read_status
from tuning.runs.owner import Owner, new_visitor_id
from tuning.runs.queue import TrainingQueue

ALICE, BOB = Owner(new_visitor_id()), Owner(new_visitor_id())


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def adapter(tmp_path):
    return lora_adapter(tmp_path / "made" / "adapter")


def refused(source, runs, match, **kwargs):
    """Import must fail with a message matching `match`, and leave no run behind (not even half of one)."""
    with pytest.raises(AdapterImportError, match=match) as caught:
        import_adapter(source, runs, ALICE, **kwargs)
    assert not runs.exists() or [p.name for p in runs.iterdir()] == []
    return str(caught.value)


def test_a_bare_adapter_zip_becomes_a_completed_run_of_its_owner(adapter, runs, tmp_path):
    imported = import_adapter(zip_folder(adapter, tmp_path / "my adapter.zip", inside=""), runs, ALICE)
    assert "my-adapter-imported" in imported.run_id
    assert has_adapter(imported.run_dir) and read_status(imported.run_dir)["state"] == COMPLETED
    assert imported.base_model == json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    recipe = load_recipe(imported.run_dir / CONFIG_FILE)  # rebuilt from adapter_config.json
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.target_modules) == (4, 8, ["q_proj"])
    queue = TrainingQueue(runs)
    assert queue.owned_runs(ALICE) == [imported.run_id] and queue.owned_runs(BOB) == []


def test_a_whole_run_zip_keeps_its_recipe_metrics_and_scorecard(adapter, runs, tmp_path):
    run = make_run_folder(tmp_path / "cluster-run")
    adapter.rename(run / "adapter")
    (run / METRICS_FILE).write_text('{"step": 2, "loss": 1.5}\n')
    (run / EVAL_FILE).write_text('{"tuned": {}}\n')
    (run / "status.json").write_text('{"state": "completed", "step": 2, "total_steps": 2}')
    (run / "owner.sha256").write_text("someone-else\n")  # the uploader's owner file is never taken over
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-2" / "optimizer.pt").write_bytes(b"pickle")  # left out, not refused
    imported = import_adapter(zip_folder(run, tmp_path / "run.zip"), runs, ALICE)
    assert (imported.run_dir / METRICS_FILE).read_text() == '{"step": 2, "loss": 1.5}\n'
    assert (imported.run_dir / EVAL_FILE).is_file() and (imported.run_dir / "data" / "train.jsonl").is_file()
    assert not (imported.run_dir / "checkpoints").exists()
    assert load_recipe(imported.run_dir / CONFIG_FILE).lora.r == 32  # the run's own recipe
    assert imported.base_model == EMBEDDED_MODEL and read_status(imported.run_dir)["step"] == 2
    assert TrainingQueue(runs).owned_runs(BOB) == []


def test_pickled_weights_are_refused(adapter, runs, tmp_path):
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    message = refused(zip_folder(adapter, tmp_path / "a.zip"), runs, "adapter_model.bin: pickled weights are refused")
    assert "safe_serialization=True" in message


def test_entries_outside_the_folder_are_refused(adapter, runs, tmp_path):
    for name in ("../evil.txt", "adapter/../../evil.txt", "/etc/evil.txt", "C:/evil.txt"):
        upload = zip_folder(adapter, tmp_path / "a.zip", extra={name: b"x"})
        assert "zip the folder again from inside its parent" in refused(upload, runs, "points outside the folder")


def test_a_symbolic_link_entry_is_refused(adapter, runs, tmp_path):
    upload = zip_folder(adapter, tmp_path / "a.zip")
    with zipfile.ZipFile(upload, "a") as archive:
        link = zipfile.ZipInfo("adapter/tokenizer.json")
        link.external_attr = (0o120777) << 16
        archive.writestr(link, "/etc/passwd")
    refused(upload, runs, "is a symbolic link -- zip the real files")


def test_a_file_that_is_no_zip_is_refused(runs, tmp_path):
    (tmp_path / "a.zip").write_bytes(b"PK but not really a zip")
    refused(tmp_path / "a.zip", runs, "a.zip: not a readable zip .* zip the folder again")


def test_a_zip_without_adapter_config_is_refused(adapter, runs, tmp_path):
    (adapter / "adapter_config.json").unlink()
    refused(zip_folder(adapter, tmp_path / "a.zip"), runs, "no adapter_config.json in it -- zip the run folder")


@pytest.mark.parametrize("config, match", [
    ("{not json", "adapter_config.json can't be read"),
    ('{"peft_type": "PROMPT_TUNING", "base_model_name_or_path": "x"}', "only LoRA adapters"),
    ('{"peft_type": "LORA"}', "base_model_name_or_path is missing -- set it to the base model's Hub id"),
    ('{"peft_type": "LORA", "base_model_name_or_path": "embedded", "r": "eight"}', "r should be a number"),
])
def test_a_broken_adapter_config_is_refused_naming_the_field(adapter, runs, tmp_path, config, match):
    (adapter / "adapter_config.json").write_text(config)
    refused(zip_folder(adapter, tmp_path / "a.zip"), runs, match)


def test_damaged_weights_are_refused(adapter, runs, tmp_path):
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    refused(zip_folder(adapter, tmp_path / "a.zip"), runs, "adapter_model.safetensors can't be read .* cut short")


def test_an_unknown_base_model_is_refused_naming_it(runs, tmp_path):
    adapter = lora_adapter(tmp_path / "adapter", base="no-such-org/no-such-model")
    message = refused(zip_folder(adapter, tmp_path / "a.zip"), runs, "the base model 'no-such-org/no-such-model'")
    assert "base_model_name_or_path" in message and "hf download no-such-org/no-such-model" in message


def test_an_upload_over_the_limit_is_refused(adapter, runs, tmp_path, monkeypatch):
    upload = zip_folder(adapter, tmp_path / "a.zip")
    monkeypatch.setenv("KANTELE_MAX_UPLOAD_MB", "0.001")
    assert "raise KANTELE_MAX_UPLOAD_MB" in refused(upload, runs, r"a.zip: .* over the upload limit")
    # A small zip that unpacks to more than the limit (a zip bomb) is refused before anything is written.
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("adapter/padding.json", b"0" * 4_000_000)
    refused(bomb, runs, r"bomb.zip \(unpacked\): 3.8 MB, over the upload limit of 0.0 MB",
            limits=UploadLimits(max_bytes=bomb.stat().st_size + 1000))


def test_a_failure_while_writing_leaves_no_half_run(adapter, runs, tmp_path, monkeypatch):
    def full_disk(*args):
        raise AdapterImportError("disk full (simulated)")

    monkeypatch.setattr(adapter_import, "record_owner", full_disk)
    refused(zip_folder(adapter, tmp_path / "a.zip"), runs, "simulated")


def test_a_folder_imports_too(adapter, runs):
    assert has_adapter(import_adapter(adapter, runs).run_dir)


def test_a_base_model_path_from_another_machine_is_named_as_here():
    assert portable_base_name("/home/someone/.cache/kantele/models/smollm2-135m-instruct") == EMBEDDED_MODEL
    cached = "/scratch/hf/hub/models--TinyLlama--TinyLlama-1.1B-Chat-v1.0/snapshots/fe8a4ea1ffedaf415f4da2f062534de366a451e6"
    assert portable_base_name(cached) == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert portable_base_name("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def test_the_cli_imports_and_refuses_with_one_line(adapter, runs, tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    command = [sys.executable, "-m", "tuning", "import-adapter", "--runs", str(runs), "--source"]
    done = subprocess.run([*command, str(zip_folder(adapter, tmp_path / "a.zip"))], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and f"imported: {runs}" in done.stdout, done.stderr
    (adapter / "adapter_config.json").unlink()
    refused = subprocess.run([*command, str(zip_folder(adapter, tmp_path / "b.zip"))], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith("error: b.zip: no adapter_config.json")
