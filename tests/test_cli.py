"""`python -m tuning answer` / `eval`: the output files' shapes and the errors users see."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO, TINY_VALIDATION, write_jsonl

from tuning.runs.files import EVAL_FILE


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tuning", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_answer_writes_question_base_tuned_per_line(trained_run, tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Who compiled the Kalevala?"},
                                                   {"question": "What is the Sampo?"}])
    out = tmp_path / "answers.jsonl"
    result = run_cli("answer", "--run", str(trained_run), "--questions", str(questions), "--out", str(out),
                     "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["question"] for r in rows] == ["Who compiled the Kalevala?", "What is the Sampo?"]
    for row in rows:
        assert set(row) == {"question", "base", "tuned"}
        assert row["base"].strip() and row["tuned"].strip()


def test_answer_reads_the_user_turns_of_any_data_file(trained_run, tmp_path):
    data = write_jsonl(tmp_path / "v.jsonl", TINY_VALIDATION)
    result = run_cli("answer", "--run", str(trained_run), "--questions", str(data), "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["question"] for r in rows] == [r["prompt"] for r in TINY_VALIDATION]


def test_eval_prints_every_metric_and_writes_eval_json(trained_run, tmp_path):
    run = copy_of_run(trained_run, tmp_path)  # the session's run keeps its own scorecard for other tests
    result = run_cli("eval", "--run", str(run), "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    for metric in ("key_fact", "exact_match", "token_f1", "rouge_l", "bleu", "verdicts:"):
        assert metric in result.stdout
    report = json.loads((run / EVAL_FILE).read_text(encoding="utf-8"))
    assert report["summary"]["questions"] == report["summary"]["held_out"] == len(TINY_VALIDATION)
    row = report["questions"][0]
    assert {"question", "reference", "key_facts", "base", "tuned", "base_scores", "tuned_scores", "verdict"} <= set(row)


def test_eval_sample_scores_that_many_and_says_of_how_many(trained_run, tmp_path):
    run = copy_of_run(trained_run, tmp_path)
    result = run_cli("eval", "--run", str(run), "--sample", "1", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"1 of {len(TINY_VALIDATION)} held-out questions" in result.stdout
    report = json.loads((run / EVAL_FILE).read_text(encoding="utf-8"))
    assert len(report["questions"]) == report["summary"]["questions"] == 1
    assert report["questions"][0]["question"] in [r["prompt"] for r in TINY_VALIDATION]


def copy_of_run(run: Path, tmp_path: Path) -> Path:
    """The run without its checkpoints (eval needs the adapter and the data copy)."""
    return Path(shutil.copytree(run, tmp_path / run.name, ignore=shutil.ignore_patterns("checkpoint-*")))


def test_empty_question_is_reported_with_its_row(trained_run, tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Fine?"}, {"question": "  "}])
    result = run_cli("answer", "--run", str(trained_run), "--questions", str(questions), timeout=120)
    assert result.returncode == 2
    assert "row 2" in result.stderr and "question" in result.stderr


def test_unreachable_hub_model_is_one_clear_line(tmp_path, tiny_data):
    from helpers import train_command

    command = train_command(tmp_path / "hub", tiny_data, "model.name=someone/not-cached-model")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "error: can't download 'someone/not-cached-model'" in result.stderr
