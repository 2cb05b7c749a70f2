"""The Train tab's log reads as sentences, not Python dicts; its Stop button can be pressed only while the visitor's
own run is queued or running."""

import json
import logging
from types import SimpleNamespace

import pytest

from tuning.runs.files import COMPLETED, FAILED, QUEUED, RUNNING, STOPPED, read_metrics
from tuning.runs.owner import Owner, new_visitor_id
from tuning.runs.queue import RunView
from tuning.training import callbacks
from tuning.training.callbacks import MetricsCallback, format_metrics
from ui import train_tab

# What the Trainer hands on_log at a logging step and at an evaluation.
STEP_LOGS = {"loss": 1.2341, "grad_norm": 0.8731, "learning_rate": 0.0018, "epoch": 1.8,
             "num_input_tokens_seen": 40960}
EVAL_LOGS = {"eval_loss": 1.40213, "eval_runtime": 3.2, "eval_samples_per_second": 31.1,
             "eval_steps_per_second": 4.0, "epoch": 1.0}
STOP, PREFERENCE = 6, 7  # poll_run's outputs: progress, loss, learning rate, log, compare, resume, stop, preference


def train_state(step: int, tokens: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=408, epoch=step / 68, num_input_tokens_seen=tokens)


def test_a_step_and_an_evaluation_log_as_readable_lines(tmp_path, caplog, monkeypatch):
    clock = iter([100.0, 100.0, 110.0, 111.0, 112.0])  # ten seconds of training, then an evaluation, then the end
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    callback = MetricsCallback(tmp_path)
    callback.on_train_begin(None, train_state(0, 0), None)
    with caplog.at_level(logging.INFO, logger="tuning.training.metrics"):
        callback.on_log(None, train_state(120, 3120), None, logs=dict(STEP_LOGS))
        callback.on_log(None, train_state(68, 3120), None, logs=dict(EVAL_LOGS))
        callback.on_log(None, train_state(408, 3120), None, logs={"train_loss": 1.1, "train_runtime": 60.0})
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "step 120/408 · loss 1.234 · lr 1.8e-3 · 312 tokens/s · epoch 1.76"
    assert lines[1] == "step 68/408 · validation loss 1.402"
    assert len(lines) == 2, "the Trainer's closing summary is no step"
    assert not any("{" in line for line in lines), lines

    # metrics.jsonl keeps every number, as the app's curves read them.
    step, evaluation = read_metrics(tmp_path)
    assert step["step"] == 120 and step["loss"] == 1.2341 and step["learning_rate"] == 0.0018
    assert step["grad_norm"] == 0.8731 and step["tokens_per_s"] > 0 and step["total_steps"] == 408
    assert evaluation == {**{key: evaluation[key] for key in ("step", "total_steps", "epoch", "elapsed_s", "eta_s")},
                          "eval_loss": 1.40213}


def test_format_metrics_reads_any_record():
    record = {"step": 120, "total_steps": 408, "epoch": 1.8, "elapsed_s": 60.0, "eta_s": 150.0, "loss": 1.2341,
              "learning_rate": 0.0018, "grad_norm": 0.87, "tokens_per_s": 312.4}
    assert format_metrics(record) == "step 120/408 · loss 1.234 · lr 1.8e-3 · 312 tokens/s · epoch 1.8"
    assert format_metrics({**record, "learning_rate": 2e-4, "max_memory_gb": 3.214}) == (
        "step 120/408 · loss 1.234 · lr 2e-4 · 312 tokens/s · epoch 1.8 · GPU memory 3.2 GB")
    assert format_metrics({"step": 1, "total_steps": 0, "loss": None, "learning_rate": 0.0, "tokens_per_s": None,
                           "epoch": 0.0}) == "step 1 · lr 0 · epoch 0"
    assert format_metrics(json.loads('{"step": 68, "total_steps": 408, "eval_loss": 1.4}')) == (
        "step 68/408 · validation loss 1.400")


class FakeRuns:
    """RUNS, answering for one run in a given state."""

    def __init__(self, state: str, metrics: list | None = None) -> None:
        self.state, self.metrics = state, metrics or []

    def view(self, run_id, asker):
        return RunView(run_id=run_id, state=self.state, step=3, total_steps=10, log_tail="step 3/10 · loss 1.000",
                       metrics=self.metrics)

    def training_now(self, asker):
        return self.state == RUNNING, None


@pytest.mark.parametrize(("state", "pressable"), [(QUEUED, True), (RUNNING, True), (COMPLETED, False),
                                                  (STOPPED, False), (FAILED, False)])
def test_stop_is_pressable_only_while_the_visitors_run_is_queued_or_running(monkeypatch, state, pressable):
    monkeypatch.setattr(train_tab, "RUNS", FakeRuns(state))
    outputs = train_tab.poll_run("run-1", Owner(new_visitor_id()))
    assert len(outputs) == 8 and outputs[STOP]["interactive"] is pressable
    assert outputs[3] == "step 3/10 · loss 1.000"
    assert outputs[PREFERENCE]["visible"] is False  # an SFT run has no rewards to draw


def test_a_dpo_run_draws_its_rewards_margin_and_share_of_pairs_won(monkeypatch):
    metrics = [{"step": step, "loss": 0.69 - step / 100, "rewards/chosen": step / 10, "rewards/rejected": -step / 10,
                "rewards/margins": step / 5, "rewards/accuracies": 1.0} for step in (1, 2)]
    monkeypatch.setattr(train_tab, "RUNS", FakeRuns(RUNNING, metrics))
    plot = train_tab.poll_run("run-1", Owner(new_visitor_id()))[PREFERENCE]
    assert plot["visible"] is True
    assert set(plot["value"]["series"]) == {"rewards/chosen", "rewards/rejected", "rewards/margins",
                                            "rewards/accuracies"} and len(plot["value"]) == 8


def test_stop_is_not_pressable_without_a_run_of_ones_own(monkeypatch):
    monkeypatch.setattr(train_tab, "RUNS", FakeRuns(RUNNING))
    assert train_tab.poll_run(None, Owner(new_visitor_id()))[STOP]["interactive"] is False

    class NotYours(FakeRuns):
        def view(self, run_id, asker):
            raise ValueError("no run 'run-1'")

    monkeypatch.setattr(train_tab, "RUNS", NotYours(RUNNING))
    assert train_tab.poll_run("run-1", Owner(new_visitor_id()))[STOP]["interactive"] is False


def test_the_train_tab_starts_with_stop_unpressable_and_says_when_runs_are_lost(monkeypatch, tmp_path):
    import gradio as gr

    from ui import storage_note

    monkeypatch.setenv("SPACE_ID", "alice/kantele")
    monkeypatch.setattr(storage_note, "APP_DATA", tmp_path)
    with gr.Blocks() as demo:
        train_tab.build_train_tab(gr.State({}), gr.State(None), gr.State(None), gr.State(None))
    blocks = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    assert blocks["stop-training"].interactive is False
    assert blocks["train-storage-note"].visible is True and "no persistent storage" in blocks["train-storage-note"].value
    [poll] = [fn for fn in demo.fns.values() if fn.fn is train_tab.poll_run]
    assert poll.outputs[STOP] is blocks["stop-training"]
