"""Two sides answered at once by one model: each on its own thread and core, and the timing that decides
whether that beats one batch (tuning/chat/pane_strategy.py).

torch's intra-op thread count is read per thread (OpenMP's, which oneDNN's matmuls use too): each side's
thread sets itself to one, so two sides on a 2-core CPU use one core each instead of four threads fighting
over two. The count other threads start with is put back afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tuning.chat.lora_scaling import adapter_off_on_some_threads, adapter_off_on_this_thread, masked_rows
from tuning.chat.pane_strategy import BATCHED, MEASURE_TOKENS, SEQUENTIAL, THREADS, PaneTimings

MEASURE_ROUNDS = 2  # timed rounds after a warm-up; the best of each is kept
MEASURE_SHORT = 2  # new tokens of the short timing, whose time is taken off the long one's
MEASURE_QUESTION = "Who compiled the Kalevala, and from what?"


def run_sides_at_once(model, adapter: str, jobs: list[Callable[[], object]], adapter_on: list[bool]) -> None:
    """Run each job on its own thread with one intra-op thread, `model`'s `adapter` on or off there as
    `adapter_on` says (off: the base model answers); wait for all, then raise the first failure. The caller
    holds the model's generation lock."""
    import torch

    threads_before = torch.get_num_threads()
    failures: list[BaseException] = []

    def run(job: Callable[[], object], on: bool) -> None:
        torch.set_num_threads(1)
        try:
            with adapter_off_on_this_thread(not on), torch.inference_mode():
                job()
        except BaseException as exc:  # noqa: BLE001 -- raised on the caller's thread below
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(job, on), daemon=True) for job, on in zip(jobs, adapter_on)]
    with adapter_off_on_some_threads(model, adapter):
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    torch.set_num_threads(threads_before)  # what threads started from now on read (each side set it to 1)
    if failures:
        raise failures[0]


def measure_strategies(chat, rows: int, strategies: tuple[str, ...]) -> PaneTimings:
    """Seconds per decode step of `rows` rows a side: one side alone and both sides by each strategy.

    Each is timed at MEASURE_SHORT and MEASURE_TOKENS forced new tokens and the difference divided by the
    steps between: the prompt's prefill cancels out, so a few steps predict a long answer (timed whole,
    8 tokens made a batch of two look 1.5x one row where 64 took 2.5x). Rounds are interleaved (a slow spell
    of the machine falls on all) and the best of each kept. Called with the chat's generation lock held and
    an adapter attached."""
    import torch

    from tuning.chat.side_by_side import TUNED_ADAPTER, GenerationSettings

    prompt = chat.fit(MEASURE_QUESTION).ids

    def generate(prompts: list[list[int]], tokens: int) -> None:
        chat._generate(prompts, GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens))

    side = [prompt] * rows

    def batched(tokens: int) -> None:
        with masked_rows(chat.model, TUNED_ADAPTER, [False] * rows + [True] * rows):
            generate(side + side, tokens)

    runs = {
        "single": lambda tokens: generate(side, tokens),
        BATCHED: batched,
        SEQUENTIAL: lambda tokens: (generate(side, tokens), generate(side, tokens)),
        THREADS: lambda tokens: run_sides_at_once(
            chat.model, TUNED_ADAPTER, [lambda: generate(side, tokens), lambda: generate(side, tokens)], [False, True]),
    }
    runs = {name: run for name, run in runs.items() if name == "single" or name in strategies}

    def seconds(run, tokens: int) -> float:
        started = time.perf_counter()
        run(tokens)
        return time.perf_counter() - started

    per_step = dict.fromkeys(runs, float("inf"))
    chat._warm_up()  # before any two threads share the model
    with torch.inference_mode():
        for run in runs.values():  # warm-up: caches, allocations, the thread pools
            run(MEASURE_SHORT)
        for _ in range(MEASURE_ROUNDS):
            for name, run in runs.items():
                step = (seconds(run, MEASURE_TOKENS) - seconds(run, MEASURE_SHORT)) / (MEASURE_TOKENS - MEASURE_SHORT)
                per_step[name] = min(per_step[name], max(step, 1e-6))
    return PaneTimings(rows=rows, single=per_step.pop("single"), both={name: per_step[name] for name in strategies})
