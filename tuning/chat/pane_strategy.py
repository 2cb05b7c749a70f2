"""How one base model answers two sides at once -- the chat's two panes, the scorecard's base and tuned
batches -- chosen by measurement on the machine at hand.

Strategies (all share the one model in memory; tuning/chat/lora_scaling.py applies the adapter per row or thread):
- BATCHED: one generate whose batch holds both sides' rows, the adapter masked per row, on all cores.
- SEQUENTIAL: one side after the other, each on all cores (the scorecard's old path: it can't stream both).
- THREADS: one generate per side at once, each on its own thread with one core.

Which is fastest depends on the CPU: on one 2-core machine a batch of 2 rows cost 1.09x one row, on
another 1.65x while decode gained little from a second core, so two one-core streams won there. A few
forced decode steps of each strategy are timed at first use, and the result kept per machine, model shape,
dtype and rows (tuning/hardware/machine_cache.py). A GPU, or a CPU with one core, always batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tuning.hardware.machine_cache import MachineCache, machine_key

log = logging.getLogger(__name__)

BATCHED, SEQUENTIAL, THREADS = "batched", "sequential", "threads"
DESCRIPTIONS = {BATCHED: "one batched generate", SEQUENTIAL: "one side after the other",
                THREADS: "two streams at once, one core each"}
CHAT_STRATEGIES = (BATCHED, THREADS)  # the panes must both stream at once
SCORECARD_STRATEGIES = (SEQUENTIAL, THREADS)  # base and tuned rows end at different lengths: not one batch
MEASURE_TOKENS = 12  # new tokens of the long timing (tuning/chat/side_threads.py): ~1-2 s a strategy here
# Another strategy must be this much faster to replace the default: a tie isn't worth the less usual path.
CLEAR_MARGIN = 1.05
CACHE_FILE = "pane_strategy.json"
METHOD = "v3"  # in the cache key: a measurement taken another way is taken again


@dataclass(frozen=True)
class PaneTimings:
    """Seconds per decode step: one side alone, and both sides by each strategy."""

    rows: int  # rows per side: 1 for the chat, the scorecard's batch size for it
    single: float
    both: dict[str, float]

    def ratio(self, strategy: str) -> float:
        """Both sides by `strategy` against one side alone, per decode step (1.0: the second side came free)."""
        return self.both[strategy] / self.single

    def choice(self) -> str:
        return choose_strategy(self)

    def summary(self) -> str:
        """'two streams at once, one core each (1.38× one answer's time, measured here; one batched generate:
        2.40×)'."""
        chosen = self.choice()
        others = "; ".join(f"{DESCRIPTIONS[name]}: {self.ratio(name):.2f}×" for name in self.both if name != chosen)
        return f"{DESCRIPTIONS[chosen]} ({self.ratio(chosen):.2f}× one answer's time, measured here; {others})"

    def record(self) -> dict:
        return asdict(self)


def choose_strategy(timings: PaneTimings | None, default: str | None = None) -> str:
    """The strategy to answer both sides with: the measured fastest, where it is clearly faster than the
    default (the first one measured); the default without a measurement."""
    if timings is None:
        return default or BATCHED
    default = default or next(iter(timings.both))
    fastest = min(timings.both, key=timings.both.get)
    return fastest if timings.both[fastest] * CLEAR_MARGIN < timings.both[default] else default


def can_run_side_by_side(is_gpu: bool) -> bool:
    """Threads only pay where each side gets a core of its own: a CPU with two or more (a GPU batches)."""
    return not is_gpu and (os.cpu_count() or 1) >= 2


_timings = MachineCache(CACHE_FILE)


def pane_timings(model_key: str, rows: int, measure: Callable[[], PaneTimings]) -> PaneTimings:
    """The timings for this machine, model (shapes and dtype) and rows: cached, else measured now."""
    import torch

    def measure_now() -> PaneTimings:
        timings = measure()
        log.info("measured the side-by-side strategies (%d row(s) a side): %s", rows, timings.summary())
        return timings

    key = f"{machine_key(torch.get_num_threads())} | {METHOD} | {model_key} | {rows} rows"
    return _timings.get(key, measure_now, lambda entry: PaneTimings(**entry), PaneTimings.record)


def forget_timings() -> None:
    """Drop this process's remembered timings (tests; the cache file stays)."""
    _timings.forget()
