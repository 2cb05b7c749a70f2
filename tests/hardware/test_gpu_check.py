"""The GPU recipe, checked without a GPU: its learning budget against the CPU recipe's, the arithmetic its
comments state against the real data, its memory against a T4; and bench/gpu_check.py's paths that run here."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import REPO

from tuning.config import load_recipe
from tuning.data.examples import load_examples
from tuning.hardware.device import Device
from tuning.runs.files import ENVIRONMENT_FILE, EVAL_FILE, METRICS_FILE, STATUS_FILE
from tuning.training.estimate import estimate_run

CPU_RECIPE = REPO / "configs" / "kalevala.yaml"
GPU_RECIPE = REPO / "configs" / "kalevala-tinyllama.yaml"
GPU_CHECK = REPO / "bench" / "gpu_check.py"
# TinyLlama/TinyLlama-1.1B-Chat-v1.0's config.json (the shapes tuning/training/estimate.py counts with).
TINYLLAMA = SimpleNamespace(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                            num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False)
T4 = Device(name="Tesla T4", capability=(7, 5), total_memory_gb=15.6, dtype="float16")


def pairs(recipe) -> int:
    """Training conversations the recipe's data holds, as the trainer reads them (validated, deduplicated)."""
    return len(load_examples([REPO / path for path in recipe.data.train]).examples)


def steps(recipe, epochs: float | None = None) -> int:
    """Optimizer steps, by tuning/training/estimate.py's arithmetic (the Trainer's: ceil of epochs x steps per epoch)."""
    if epochs is not None:
        recipe = replace(recipe, training=replace(recipe.training, epochs=epochs))
    return estimate_run(recipe, TINYLLAMA, [1] * pairs(recipe), T4).steps


def comment(path: Path, pattern: str) -> tuple[str, ...]:
    """The groups of the first comment line of a recipe matching pattern (the test fails if none does)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.search(pattern, line) if line.lstrip().startswith("#") else None
        if found:
            return found.groups()
    raise AssertionError(f"{path.name}: no comment matches {pattern!r}")


def test_gpu_recipe_learns_at_least_a_third_of_what_the_cpu_recipe_does():
    cpu, gpu = load_recipe(CPU_RECIPE), load_recipe(GPU_RECIPE)
    cpu_budget = steps(cpu) * cpu.training.learning_rate
    gpu_budget = steps(gpu) * gpu.training.learning_rate
    # The old recipe (8 x 4 batch, 5 epochs, 2e-4) had 85 x 2e-4 = 0.017 against 0.816: 48x smaller.
    assert gpu_budget >= cpu_budget / 3, f"{gpu_budget:.3f} vs the CPU recipe's {cpu_budget:.3f}"


@pytest.mark.parametrize("path", [CPU_RECIPE, GPU_RECIPE], ids=lambda p: p.name)
def test_recipe_arithmetic_comment_matches_the_data(path):
    recipe = load_recipe(path)
    stated = comment(path, r"Arithmetic: (\d+) training pairs / batch (\d+) = (\d+) optimizer steps per epoch; "
                           r"x (\d+) epochs = (\d+) steps")
    n, batch, per_epoch, epochs, total = map(int, stated)
    assert n == pairs(recipe)
    assert batch == recipe.training.batch_size * recipe.training.grad_accum
    assert per_epoch == steps(recipe, epochs=1)
    assert epochs == recipe.training.epochs
    assert total == steps(recipe)


def test_gpu_recipe_budget_comment_matches_both_recipes():
    cpu, gpu = load_recipe(CPU_RECIPE), load_recipe(GPU_RECIPE)
    stated = comment(GPU_RECIPE, r"\(steps x peak rate\): (\d+) x ([\d.e-]+) = ([\d.]+), ([\d.]+) of the CPU "
                                 r"recipe's (\d+) x ([\d.e-]+) = (\d+\.\d+)")
    gpu_steps, gpu_rate, gpu_budget, share, cpu_steps, cpu_rate, cpu_budget = map(float, stated)
    assert (gpu_steps, gpu_rate) == (steps(gpu), gpu.training.learning_rate)
    assert (cpu_steps, cpu_rate) == (steps(cpu), cpu.training.learning_rate)
    assert gpu_budget == round(gpu_steps * gpu_rate, 2) and cpu_budget == round(cpu_steps * cpu_rate, 2)
    assert share == round(gpu_steps * gpu_rate / (cpu_steps * cpu_rate), 2)


def test_gpu_recipe_fits_a_t4_at_max_length():
    recipe = load_recipe(GPU_RECIPE)
    worst = estimate_run(recipe, TINYLLAMA, [recipe.data.max_length] * pairs(recipe), T4)
    (stated,) = comment(GPU_RECIPE, r"^#\s+= ([\d.]+) GB: about a third of a T4")
    assert abs(float(stated) - worst.training_memory_gb) < 0.5  # the comment follows the estimate's arithmetic
    assert worst.training_memory_gb < T4.total_memory_gb / 2  # room for the estimate to be 2x short


def load_gpu_check():
    """bench/gpu_check.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run_dir: Path, device, tuned: float) -> Path:
    """A run folder with just what gpu_check reads: environment, metrics, scorecard."""
    run_dir.mkdir()
    (run_dir / ENVIRONMENT_FILE).write_text(json.dumps({"device": device}))
    lines = [{"step": s, "total_steps": 10, "loss": 1.0, "elapsed_s": s, "tokens_per_s": 900.0 + s} for s in (1, 5, 10)]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / STATUS_FILE).write_text(json.dumps({"state": "completed", "step": 10, "total_steps": 10}))
    summary = {"questions": 58, "held_out": 58, "metrics": {"key_fact": {"base": 0.02, "tuned": tuned}}}
    (run_dir / EVAL_FILE).write_text(json.dumps({"summary": summary}))
    return run_dir


def test_gpu_check_fails_a_run_that_trained_on_the_cpu_or_learned_too_little(tmp_path, capsys):
    check = load_gpu_check()
    figures = {}
    cpu = {"name": "CPU (2 cores)", "capability": None, "total_memory_gb": 8.0, "dtype": "float32"}
    for index, recorded in enumerate([cpu, "cpu (2 cores)", None]):  # tuning.hardware.device's record; older runs' name
        fell_back = write_run(tmp_path / f"cpu{index}", recorded, tuned=0.75)
        failures = check.report_training(fell_back, 60.0, 1.5, "cuda", figures)
        assert failures[0].startswith("training fell back to the CPU")
    assert check.report_training(fell_back, 60.0, None, "cpu", figures) == []  # --device cpu: the CPU is right
    on_gpu = write_run(tmp_path / "gpu", T4.record(), tuned=0.69)
    assert check.report_training(on_gpu, 60.0, 1.5, "cuda", figures) == []
    assert figures["tokens_per_s"] == 907.5 and figures["steps"] == 10
    assert "tuned key facts 69.0% < 70%" in check.report_scorecard(on_gpu, 0.70, figures)[0]
    assert check.report_scorecard(on_gpu, 0.0, figures) == []  # --min-key-facts 0: the CPU path's gate
    out = capsys.readouterr().out
    assert "trained on Tesla T4 (float16): 10 of 10 steps" in out and "key facts base 2.0% -> tuned 69.0%" in out


def run_gpu_check(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}  # no GPU, even on a machine with one
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_gpu_check_without_cuda_stops_at_once_with_exit_2(tmp_path):
    started = time.monotonic()
    result = run_gpu_check("--runs", str(tmp_path), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no CUDA device" in result.stderr and "--device cpu" in result.stderr
    assert time.monotonic() - started < 60  # importing torch, nothing more
    assert not any(tmp_path.iterdir())  # nothing trained


def test_gpu_check_reports_a_short_cpu_run(tmp_path):
    # Its whole reporting path, on the embedded model for 4 steps: no key-fact gate (4 steps learn nothing).
    result = run_gpu_check("--device", "cpu", "--model", "embedded", "--steps", "4", "--min-key-facts", "0",
                           "--runs", str(tmp_path), "--set", "training.scorecard_questions=4",
                           "--set", "training.eval_each_epoch=false", "--set", "training.logging_steps=1",
                           "--questions", "2", "--tokens", "8",
                           timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # fp32 or bf16: whichever this CPU measured faster (tuning/hardware/cpu_precision.py), recorded with its measurement
    assert figures["passed"] and figures["device"]["capability"] is None
    assert figures["device"]["dtype"] in ("float32", "bfloat16") and "cpu_bf16_speedup" in figures["device"]
    assert figures["ran_on"].lower().startswith("cpu") and figures["steps"] == 4 and figures["tokens_per_s"] > 0
    assert figures["scored"] == 4 and 0 <= figures["key_facts_tuned"] <= 1
    assert figures["chat"]["questions"] == 2 and figures["chat"]["both"] > 0 and figures["chat"]["single"] > 0
    for line in ("device: CPU", "trained on CPU", "scorecard (4 of 58 held-out questions): key facts base",
                 "chat, 8-token answers, median of 2 held-out questions", "total "):
        assert line in result.stdout
