"""Measurements that hold for one machine, taken once and kept in Kantele's cache folder.

A speed decision made on one CPU is a guess on the next, so the CPU's precision (tuning/hardware/cpu_precision.py)
and the panes' strategy (tuning/chat/pane_strategy.py) are measured where they run. Each kind keeps one JSON file
of {key: measurement}; the key names what the measurement holds for (CPU model, flags, torch version,
threads, model shapes...). A damaged file or an entry of another version is measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def cpu_description() -> tuple[str, str]:
    """The CPU's model name and its feature flags (Linux /proc/cpuinfo; platform's answer elsewhere)."""
    name, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            field, _, value = line.partition(":")
            field = field.strip()
            if field in ("model name", "Model", "cpu model") and not name:
                name = value.strip()
            elif field in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def cpu_name() -> str:
    """The CPU's model name, for reports ('AMD EPYC', 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz')."""
    return cpu_description()[0]


def machine_key(threads: int) -> str:
    """What a CPU measurement holds for: this CPU model with these flags, this torch, this many threads."""
    import torch

    name, flags = cpu_description()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{name} | flags {digest} | torch {torch.__version__} | {threads} threads"


class MachineCache:
    """One kind of measurement: remembered in this process, kept in <cache folder>/<file_name>."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self._memo: dict[str, object] = {}
        self._lock = threading.Lock()  # the app's chat threads may all ask at once: one measures, the rest wait

    def path(self) -> Path:
        from tuning.models.loading import cache_dir

        return cache_dir() / self.file_name

    def _read(self, path: Path) -> dict:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            return cached if isinstance(cached, dict) else {}
        except (OSError, ValueError):  # none yet, or damaged: measure again
            return {}

    def write(self, key: str, entry: dict) -> None:
        """Add one measurement to the file (atomically; a file that can't be written is measured again)."""
        from tuning.runs.files import write_json

        path = self.path()
        try:
            write_json(path, {**self._read(path), key: entry})
        except OSError as exc:
            log.info("couldn't keep the measurement in %s: %s", path, exc)

    def get(self, key: str, measure: Callable[[], T], load: Callable[[dict], T], record: Callable[[T], dict]) -> T:
        """The measurement for `key`: remembered, else from the file (`load` an entry), else `measure()`d now
        and kept (`record` it). An entry `load` can't read (another version's) is measured again."""
        with self._lock:
            if key in self._memo:
                return self._memo[key]
            entry = self._read(self.path()).get(key)
            try:
                value = load(entry) if isinstance(entry, dict) else None
            except (TypeError, KeyError, ValueError):
                value = None
            if value is None:
                value = measure()
                self.write(key, record(value))
            self._memo[key] = value
            return value

    def forget(self) -> None:
        """Drop this process's remembered measurements (tests; the file stays)."""
        with self._lock:
            self._memo.clear()
