"""Real QLoRA training of the embedded model: run folder contents, graceful stop and resume."""

import csv
import io
import json
import signal
import subprocess
import time
from pathlib import Path

import yaml
from helpers import REPO, train_command, write_jsonl

from tuning.runs.files import (
    ADAPTER_DIR,
    CONFIG_FILE,
    DATA_FILE,
    ENVIRONMENT_FILE,
    EVAL_CSV_FILE,
    EVAL_FILE,
    LOG_FILE,
    read_metrics,
    read_status,
)
from tuning.training.curves import LEARNING_RATE_PNG, LOSS_PNG


def recipe_r(run_dir):
    return yaml.safe_load((run_dir / CONFIG_FILE).read_text())["lora"]["r"]


def test_run_folder_describes_the_run(trained_run):
    adapter = trained_run / ADAPTER_DIR
    assert (adapter / "adapter_model.safetensors").stat().st_size > 100_000
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == recipe_r(trained_run)
    recipe = yaml.safe_load((trained_run / CONFIG_FILE).read_text())
    assert recipe["training"]["max_steps"] == 6 and recipe["model"]["load_in_4bit"] is True
    data = json.loads((trained_run / DATA_FILE).read_text())
    assert data["train_examples"] == 8 and len(data["train_fingerprint"]) == 64
    environment = json.loads((trained_run / ENVIRONMENT_FILE).read_text())
    assert environment["libraries"]["torch"].startswith("2.13") and environment["libraries"]["peft"]
    assert "trainable parameters" in (trained_run / LOG_FILE).read_text()
    assert read_status(trained_run)["state"] == "completed"


def test_every_run_ends_with_a_scorecard_and_curves(trained_run):
    report = json.loads((trained_run / EVAL_FILE).read_text(encoding="utf-8"))
    assert report["summary"]["questions"] == 2
    assert set(report["summary"]["metrics"]) == {"key_fact", "exact_match", "token_f1", "rouge_l", "bleu"}
    rows = list(csv.DictReader(io.StringIO((trained_run / EVAL_CSV_FILE).read_text(encoding="utf-8"))))
    assert [r["question"] for r in rows] == [q["question"] for q in report["questions"]]
    assert {"verdict", "base_token_f1", "tuned_key_fact"} <= set(rows[0])
    for png in (LOSS_PNG, LEARNING_RATE_PNG):
        assert (trained_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_trainers_scorecard_asks_the_recipes_probes_and_keeps_the_source_documents(trained_run):
    probes = json.loads((trained_run / EVAL_FILE).read_text(encoding="utf-8"))["probes"]
    assert set(probes) == {"forgetting", "limits", "memorised", "retrieval"}
    assert probes["forgetting"]["asked"] == 2  # quick mode: scorecard questions 2 samples 2 of each set
    assert probes["limits"]["off_topic"]["tuned"]["asked"] == 2
    assert probes["retrieval"]["sources"] == ["source.md"] and probes["retrieval"]["questions"] == 2
    kept = trained_run / "data" / "sources" / "source.md"  # the run needs nothing outside its folder
    assert kept.read_text(encoding="utf-8") == (REPO / "datasets" / "kalevala" / "source.md").read_text(encoding="utf-8")
    assert "general skills kept" in (trained_run / LOG_FILE).read_text()


def test_a_missing_source_document_or_retrieval_without_any_stops_before_training(tmp_path, tiny_data):
    missing = subprocess.run(train_command(tmp_path / "a", tiny_data, "data.sources=[no-such.md]"), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "data.sources: no-such.md is not a file" in missing.stderr
    other_topic = write_jsonl(tmp_path / "eggs.jsonl", [{"prompt": "How long do I boil an egg?",
                                                         "response": "About 7 minutes."}] * 4)
    data = {"train": other_topic, "validation": other_topic}
    nothing = subprocess.run(train_command(tmp_path / "b", data, "data.sources=[]", "training.probes=[retrieval]"),
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert nothing.returncode != 0 and "the retrieval probe needs the documents" in nothing.stderr
    assert not (tmp_path / "b" / "adapter").exists()


def test_metrics_have_one_line_per_step_with_throughput_and_eta(trained_run):
    records = read_metrics(trained_run)
    train_steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_steps] == [1, 2, 3, 4, 5, 6]
    for record in train_steps:
        assert record["total_steps"] == 6
        assert record["loss"] > 0 and record["learning_rate"] is not None
        assert record["tokens_per_s"] > 0 and record["elapsed_s"] > 0 and record["eta_s"] is not None
    evals = [r for r in records if "eval_loss" in r]
    assert len(evals) >= 2, "validation loss is computed every epoch (8 rows / batch 4 = 2 steps an epoch)"
    # A high learning rate on 8 rows: the loss must fall.
    assert train_steps[-1]["loss"] < train_steps[0]["loss"]


def test_sigterm_stops_after_the_step_saves_and_resume_continues(tmp_path, tiny_data):
    run_dir = tmp_path / "stopped"
    process = subprocess.Popen(train_command(run_dir, tiny_data, "training.max_steps=40"), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(r.get("step", 0) >= 2 for r in read_metrics(run_dir)):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "training never reached step 2"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, process.stderr.read()[-3000:]

    status = read_status(run_dir)
    assert status["state"] == "stopped"
    stopped_at = status["step"]
    assert 2 <= stopped_at < 40
    assert (run_dir / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped_at}").is_dir(), "stop saves a checkpoint"

    finish_at = stopped_at + 2
    resumed = subprocess.run(
        [*train_command(run_dir, tiny_data), "--resume", "--set", f"training.max_steps={finish_at}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in (run_dir / LOG_FILE).read_text()
    steps = [r["step"] for r in read_metrics(run_dir) if "loss" in r]
    assert steps == sorted(set(steps)), "no step is logged twice after a resume"
    assert steps[-1] == finish_at
    assert read_status(run_dir)["state"] == "completed"


def test_a_stop_while_the_trainer_is_still_starting_ends_it_stopped_not_failed(tmp_path, tiny_data):
    """Stop pressed right after Start reaches the trainer while torch is still importing: it is kept, and the
    run stops after its first step with the adapter saved."""
    run_dir = tmp_path / "stopped-early"
    process = subprocess.Popen(train_command(run_dir, tiny_data, "training.max_steps=40"), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not catches_sigterm(process.pid):  # the earliest a trainer can be told anything: its first lines
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.01)
    assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text(), "the stop is caught only after torch"
    process.send_signal(signal.SIGTERM)  # torch and the model are still to load
    assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["step"] < 40
    assert (run_dir / ADAPTER_DIR / "adapter_model.safetensors").is_file()


def catches_sigterm(pid: int) -> bool:
    """True once the process handles SIGTERM itself (Linux: the SigCgt mask in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def test_bad_recipe_key_fails_before_loading_anything(tmp_path, tiny_data):
    result = subprocess.run(train_command(tmp_path / "bad", tiny_data, "training.max_seq_length=5"), cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown key 'training.max_seq_length'" in result.stderr


def test_invalid_data_fails_with_row_numbers_and_marks_the_run_failed(tmp_path, tiny_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok?", "response": "ok"}\n{"prompt": "no answer"}\n', encoding="utf-8")
    run_dir = tmp_path / "bad-data"
    result = subprocess.run(train_command(run_dir, {**tiny_data, "train": bad}), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "row 2" in result.stderr and "response" in result.stderr
    assert read_status(run_dir)["state"] == "failed"
