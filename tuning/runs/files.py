"""The run folder's file names and the small readers/writers every part shares.

A run folder fully describes its run (docs/ARCHITECTURE.md): the trainer writes it, the
launcher, the chat, the scorecard and the UI only read it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tuning.config import write_text_atomic

DEFAULT_RUNS_DIR = Path("runs")  # where the CLI puts runs unless told otherwise (the app: KANTELE_HOME/runs)
REQUEST_FILE = "request.yaml"  # the recipe as the app asked for it; the trainer writes the resolved config.yaml
OWNER_FILE = "owner.sha256"  # who owns the run (tuning/runs/owner.py); none: open to everyone
CONSOLE_FILE = "console.log"  # the process's own stdout/stderr: what train.log can't hold (a hard crash)
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
STATUS_FILE = "status.json"
DATA_FILE = "data.json"  # files, fingerprint and counts of the data the run saw
ENVIRONMENT_FILE = "environment.json"  # library versions and hardware
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's checkpoints/checkpoint-<step>
# The Trainer writes this last into a checkpoint: without it the save was cut short (a kill, a full disk).
CHECKPOINT_STATE_FILE = "trainer_state.json"
RUN_DATA_DIR = "data"  # copies of the exact train/validation rows, so the run can be redone anywhere
RUN_TRAIN_FILE = "train.jsonl"
RUN_VALIDATION_FILE = "validation.jsonl"
RUN_PREFERENCES_FILE = "preferences.jsonl"  # a DPO run's exact preference rows (prompt, chosen, rejected)
# A run that continued another run's adapter (training.parent_run): the method and the parent it continued.
LINEAGE_FILE = "lineage.json"
# Copies of the documents the QA pairs were made from (the recipe's data.sources): the scorecard's retrieval column
# and Chat's "with retrieval" search them.
RUN_SOURCES_DIR = "sources"
EVAL_FILE = "eval.json"
EVAL_CSV_FILE = "eval.csv"
CARD_FILE = "README.md"
# A Space deployed with `deploy --with-run RUN` carries the run here, in its own files; the app copies it into its
# runs folder at start (tuning/runs/example.py), so a new Space opens with the example already trained.
BUNDLED_RUNS_DIR = "bundled_runs"
EXAMPLE_FILE = "example.json"  # marks the shared, read-only Kalevala example run (tuning/runs/example.py)

# Status values, in the order a run passes through them.
QUEUED, RUNNING, COMPLETED, STOPPED, FAILED = "queued", "running", "completed", "stopped", "failed"
FINISHED_STATES = (COMPLETED, STOPPED, FAILED)
SCORECARD_PHASE = "scorecard"  # a running run's phase once its adapter is saved and being scored


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write JSON atomically (readers poll these files while they are written)."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def keep_source_documents(paths: list[str | os.PathLike], run_dir: str | os.PathLike) -> list[Path]:
    """Copy the documents the pairs were made from into RUN_DIR/data/sources (a name used twice gets a number), so
    the run's retrieval needs nothing outside its folder; returns the copies."""
    folder = Path(run_dir) / RUN_DATA_DIR / RUN_SOURCES_DIR
    copies, names = [], set()
    for number, source in enumerate(map(Path, paths), start=1):
        name = source.name if source.name not in names else f"{number:02d}-{source.name}"
        names.add(name)
        folder.mkdir(parents=True, exist_ok=True)
        copies.append(Path(shutil.copyfile(source, folder / name)))
    return copies


def read_json(path: str | os.PathLike, default=None):
    """Read a JSON file, or `default` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def write_status(run_dir: str | os.PathLike, state: str, **details) -> dict:
    """Record the run's state (running/completed/stopped/failed) with a timestamp."""
    path = Path(run_dir) / STATUS_FILE
    status = read_json(path, {}) or {}
    status.update(details, state=state, updated=time.time())
    write_json(path, status)
    return status


def read_status(run_dir: str | os.PathLike) -> dict:
    """The run's last recorded status ({} when it has none yet)."""
    return read_json(Path(run_dir) / STATUS_FILE, {}) or {}


def append_metrics(run_dir: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to metrics.jsonl and flush it, so pollers see it at once."""
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Every complete line of metrics.jsonl (a line being written is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def truncate_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Drop metrics logged after `last_step` (a resumed run redoes those steps)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    write_text_atomic(Path(run_dir) / METRICS_FILE, text)


def read_log_tail(run_dir: str | os.PathLike, lines: int = 40) -> str:
    """The last lines of train.log."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def has_adapter(run_dir: str | os.PathLike) -> bool:
    """True when the run saved a final adapter."""
    return (Path(run_dir) / ADAPTER_DIR / "adapter_config.json").is_file()


def checkpoint_step(folder: str | os.PathLike) -> int | None:
    """The step of a checkpoint-<step> folder (None for any other name)."""
    name = Path(folder).name
    suffix = name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def _checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's checkpoint folders, oldest step first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None] if folder.is_dir() else []
    return sorted(found, key=checkpoint_step)


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """True when the Trainer finished saving this checkpoint (its state file is there and whole)."""
    state = Path(folder) / CHECKPOINT_STATE_FILE
    return state.is_file() and read_json(state) is not None  # is_file: never read a device left in its place


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint that was saved whole; one cut short by a kill or a full disk is passed over."""
    complete = [p for p in _checkpoints(run_dir) if is_complete_checkpoint(p)]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Delete checkpoints whose save was cut short (frees the space a full disk needs back); returns them."""
    removed = [p for p in _checkpoints(run_dir) if not is_complete_checkpoint(p)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed
