"""`accelerate launch --cpu --num_processes 2 -m tuning train` (DDP over gloo) against the 1-process run.

Both runs train the same recipe on the same rows with the same effective batch (4 x 1 process vs
2 x 2 processes): the loss curves must agree within noise, and the 2-process run folder must hold
one set of files, written once, the same as a 1-process run's.
"""

import subprocess
import sys

import pytest
from helpers import REPO, free_port, train_command

from tuning.runs.files import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    COMPLETED,
    ENVIRONMENT_FILE,
    LOG_FILE,
    read_json,
    read_metrics,
    read_status,
)

# transformers' per-process RNG state: a checkpoint of an N-process run holds one per process, by design.
PER_PROCESS_FILES = ("rng_state",)
ONE_PROCESS = ["training.batch_size=4"]
TWO_PROCESSES = ["training.batch_size=2"]
TRAINING_TIMEOUT_S = 600


def launch_two_processes(command: list[str]) -> list[str]:
    """The same `python -m tuning ...` command as 2 DDP processes under `accelerate launch`.

    accelerate 1.x's `--cpu` flag starts ONE process unless mpirun is configured; `--multi_gpu` is its
    torchrun launcher, and on a machine without GPUs the processes train on the CPU over gloo."""
    assert command[:3] == [sys.executable, "-m", "tuning"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "tuning", *command[3:]]


def run(command: list[str], env_extra: dict) -> subprocess.CompletedProcess:
    import os

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TRAINING_TIMEOUT_S,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **env_extra})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def step_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r.get("loss") is not None}


def run_files(run_dir) -> list[str]:
    """Every file in the run folder, minus the per-process ones a checkpoint holds on purpose."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and not p.name.startswith(PER_PROCESS_FILES))


@pytest.fixture(scope="module")
def one_and_two_process_runs(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("distributed")
    single, double = root / "one-process", root / "two-processes"
    run(train_command(single, tiny_data, *ONE_PROCESS, "training.scorecard=false"), {})
    # Two processes on two cores: one thread each, as a cluster gives each process its own cores.
    two = run(launch_two_processes(train_command(double, tiny_data, *TWO_PROCESSES, "training.scorecard=false")),
              {"OMP_NUM_THREADS": "1"})
    return single, double, two


def test_two_process_loss_curve_matches_one_process(one_and_two_process_runs):
    single, double, _ = one_and_two_process_runs
    one, two = step_losses(single), step_losses(double)
    assert sorted(one) == sorted(two) == list(range(1, 7))
    # Same rows in the same global batches from the same starting weights: the first steps agree to
    # float rounding (step 2 also proves the averaged gradients made the same update); later steps
    # drift only by the summation order of the gradient all-reduce, amplified by a high learning rate.
    assert [two[1], two[2]] == pytest.approx([one[1], one[2]], rel=1e-3), (one, two)
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=0.25), (step, one, two)
    assert sum(two.values()) / 6 == pytest.approx(sum(one.values()) / 6, rel=0.1), (one, two)
    assert two[6] < two[1] and one[6] < one[1]


def test_two_process_run_writes_one_set_of_files(one_and_two_process_runs):
    single, double, two = one_and_two_process_runs
    assert run_files(double) == run_files(single)
    assert read_status(double)["state"] == COMPLETED
    steps = [r["step"] for r in read_metrics(double) if r.get("loss") is not None]
    assert steps == sorted(set(steps)), "each step logged once, by the main process"
    log = (double / LOG_FILE).read_text()
    assert log.count("effective batch: 4 conversations per optimizer step (2 per process x 1 accumulated x 2") == 1
    assert (double / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    # Both processes trained: the checkpoint holds each one's RNG state, and nothing else twice.
    checkpoint = sorted((double / CHECKPOINTS_DIR).iterdir())[-1]
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert "Traceback" not in two.stderr


def test_effective_batch_is_recorded_with_the_process_count(one_and_two_process_runs):
    single, double, _ = one_and_two_process_runs
    assert {k: read_json(single / ENVIRONMENT_FILE)[k] for k in ("processes", "effective_batch")} == \
        {"processes": 1, "effective_batch": 4}
    assert {k: read_json(double / ENVIRONMENT_FILE)[k] for k in ("processes", "effective_batch")} == \
        {"processes": 2, "effective_batch": 4}


def test_model_card_states_the_effective_batch_of_a_distributed_run(one_and_two_process_runs):
    from tuning.hub.card import render_model_card

    single, double, _ = one_and_two_process_runs
    assert "| batch x grad accumulation x processes | 2 x 1 x 2 = 4 per step |" in render_model_card(double)
    assert "| batch x grad accumulation | 4 x 1 |" in render_model_card(single)


def _agree_on_stop(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from tuning.training.distributed import any_process

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # The signal reached rank 0 only: both must stop at this step, or rank 1 waits for rank 0 forever.
        results[rank] = (any_process(rank == 0), any_process(False))
    finally:
        dist.destroy_process_group()


def test_a_stop_seen_by_one_process_stops_every_process():
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_agree_on_stop, args=(free_port(), results), nprocs=2, join=True)
        assert dict(results) == {0: (True, False), 1: (True, False)}
