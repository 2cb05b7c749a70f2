"""Trainer callbacks: metrics.jsonl lines with throughput and ETA (and the same as a readable train.log line), and a
graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from tuning.runs.files import append_metrics
from tuning.training.distributed import any_process
from tuning.training.early_stop import stop_requested_early

log = logging.getLogger("tuning.training.train")
# The per-step lines: train.log, the console and the Train tab's log box show them as format_metrics writes them.
metrics_log = logging.getLogger("tuning.training.metrics")
# What a DPO run logs besides its loss (TRL's DPOTrainer): the implicit rewards (beta x log-ratio to the reference) of
# the chosen and rejected answers, their margin, the share of pairs where chosen won, and the policy's log-probs.
PREFERENCE_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                   "logps/rejected")


def peak_gpu_memory_gb() -> float | None:
    """The most GPU memory this process's tensors have held so far (torch.cuda.max_memory_allocated, GB);
    None without a GPU."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e9, 3) if torch.cuda.is_available() else None


def _number(value: float, digits: int = 2) -> str:
    """1.8, 0.05, 2 -- a few decimals, no trailing zeros."""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"


def _rate(value: float) -> str:
    """A learning rate as people write it: 1.8e-3, 2e-4, 0."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def format_metrics(record: dict) -> str:
    """One metrics.jsonl record as a person reads it: `step 120/408 · loss 1.234 · lr 1.8e-3 · 312 tokens/s ·
    epoch 1.8`, or `step 68/408 · validation loss 1.402` for an evaluation; what the record lacks is left out."""
    total = record.get("total_steps")
    parts = [f"step {record.get('step', 0)}/{total}" if total else f"step {record.get('step', 0)}"]
    if record.get("eval_loss") is not None:
        parts.append(f"validation loss {record['eval_loss']:.3f}")
    else:
        if record.get("loss") is not None:
            parts.append(f"loss {record['loss']:.3f}")
        if record.get("rewards/margins") is not None:
            parts.append(f"reward margin {record['rewards/margins']:.3f}")
        if record.get("rewards/accuracies") is not None:
            parts.append(f"chosen wins {record['rewards/accuracies']:.0%}")
        if record.get("learning_rate") is not None:
            parts.append(f"lr {_rate(record['learning_rate'])}")
        if record.get("tokens_per_s") is not None:
            parts.append(f"{record['tokens_per_s']:.0f} tokens/s")
        if record.get("epoch") is not None:
            parts.append(f"epoch {_number(record['epoch'])}")
        if record.get("max_memory_gb") is not None:
            parts.append(f"GPU memory {_number(record['max_memory_gb'], 1)} GB")
    return " · ".join(parts)


class MetricsCallback(TrainerCallback):
    """Writes one metrics.jsonl line per Trainer log event: loss, lr, tokens/s, elapsed, ETA."""

    def __init__(self, run_dir: Path, elapsed_before: float = 0.0) -> None:
        self.run_dir = run_dir
        self.elapsed_before = elapsed_before  # time spent before a resume, so elapsed keeps counting
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.last_time = self.started
        self.last_tokens = 0
        self.last_step = 0
        self.last_step_time = self.started

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = self.last_step = state.global_step
        self.last_tokens = state.num_input_tokens_seen
        self.started = self.last_time = self.last_step_time = time.monotonic()

    def on_evaluate(self, args, state, control, **kwargs):
        # Evaluation takes wall time but trains nothing: keep it out of the next window's tokens/s and pace.
        self.last_time = self.last_step_time = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        now = time.monotonic()
        run_seconds = now - self.started
        done = state.global_step - (self.first_step or 0)
        remaining = max(state.max_steps - state.global_step, 0)
        # Pace of the last window, so the ETA follows a machine that got busier or freer.
        # An evaluation's own record uses the whole run's pace: its window would count the evaluation.
        window_steps = 0 if "eval_loss" in logs else state.global_step - self.last_step
        pace = (now - self.last_step_time) / window_steps if window_steps > 0 else (run_seconds / done if done else None)
        record = {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": round(state.epoch or 0.0, 4),
            "elapsed_s": round(self.elapsed_before + run_seconds, 2),
            "eta_s": round(pace * remaining, 1) if pace is not None else None,
        }
        if "eval_loss" in logs:
            record["eval_loss"] = round(logs["eval_loss"], 5)
        else:
            window = now - self.last_time
            record.update(
                loss=round(logs["loss"], 5) if "loss" in logs else None,
                learning_rate=logs.get("learning_rate"),
                grad_norm=round(float(logs["grad_norm"]), 4) if logs.get("grad_norm") is not None else None,
                tokens_per_s=round((state.num_input_tokens_seen - self.last_tokens) / window, 1) if window > 0 else None,
            )
            record.update({key: round(float(logs[key]), 5) for key in PREFERENCE_KEYS if logs.get(key) is not None})
            peak = peak_gpu_memory_gb()
            if peak is not None:  # what the run needs of a GPU: bench/gpu_check.py reports it
                record["max_memory_gb"] = peak
            self.last_time, self.last_tokens = now, state.num_input_tokens_seen
        if "train_loss" in logs:  # the Trainer's closing summary, not a step log
            return
        if window_steps > 0:
            self.last_step, self.last_step_time = state.global_step, now
        append_metrics(self.run_dir, record)
        metrics_log.info("%s", format_metrics(record))


class GracefulStop(TrainerCallback):
    """On SIGTERM/SIGINT: finish the current step, save a checkpoint, then end training."""

    def __init__(self) -> None:
        self.requested = stop_requested_early()  # a Stop pressed while torch was still importing counts too
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request)

    def _request(self, signum, frame) -> None:
        if not self.requested:
            log.info("stop requested (signal %s): finishing the current step, then saving", signum)
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        # Under DDP a signal may reach one process a step before the others: stopping alone would leave
        # them waiting for its gradients forever, so all agree on it at every step.
        self.requested = any_process(self.requested)
        if self.requested:
            control.should_training_stop = True
            control.should_save = True  # so --resume continues from exactly here
        return control
