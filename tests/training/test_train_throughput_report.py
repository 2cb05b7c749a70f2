"""bench/train_throughput.py tells the truth on any machine: MFU against the best peak the machine has (fp32 or
bf16, both printed), each variant's precision, the CPU it ran on. Its report is checked on given figures; the
peaks are measured for real (which is higher is the CPU's business)."""

import importlib.util
import re
from types import SimpleNamespace

import torch
from helpers import REPO


def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "bench" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(tokens_per_s: float, precision: str) -> dict:
    return {"tokens_per_s": tokens_per_s, "tokens": 8000, "padded_tokens": 8200, "seconds": 8000 / tokens_per_s,
            "params": 144_000_000, "precision": precision}


def test_mfu_is_taken_against_the_best_peak_and_each_precision_is_named(capsys):
    module = bench()
    args = SimpleNamespace(steps=20, warmup=3, threads=2, recipe="configs/kalevala.yaml")
    results = {"a": result(330.0, "base bf16, LoRA fp32, no autocast"),
               "b": {**result(110.0, "base bf16, LoRA bf16, bf16 autocast"), "trl_defaults": {"bf16": True}},
               "c": result(340.0, "base bf16, LoRA fp32, no autocast")}
    module.report(results, {"fp32": 150.0, "bf16": 700.0}, args)
    out = capsys.readouterr().out
    rows = {line.split(")")[0] + ")": line for line in out.splitlines() if line.startswith("(")}
    # 330 tokens/s x 6 x 144 M = 285 GFLOP/s: 40.7% of the bf16 peak (it would read 190% of the fp32 one).
    assert "40.7%" in rows["(a)"] and rows["(a)"].endswith("base bf16, LoRA fp32, no autocast")
    assert rows["(b)"].endswith("LoRA bf16, bf16 autocast")
    assert "peak = 700.0 GFLOP/s, this machine's best: bf16" in out and "fp32 150.0, bf16 700.0 GFLOP/s" in out
    assert re.search(r"2 torch threads, on .+, \d+ cores, (no GPU|.+)", out)
    assert out.strip().splitlines()[-2:] == ["a/b = 3.00  (target >= 2.0)", "a/c = 0.97  (target >= 0.9)"]


def test_both_peaks_are_measured():
    peaks = bench().measure_matmul_peaks(threads=torch.get_num_threads())
    assert set(peaks) == {"fp32", "bf16"} and all(rate > 0 for rate in peaks.values())
