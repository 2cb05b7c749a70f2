"""Two sides answered at once by one model: each on its own thread and core, and the timing that decides
whether that beats one batch (tuning/pane_strategy.py).

torch's intra-op thread count is read per thread (OpenMP's, which oneDNN's matmuls use too): each side's
thread sets itself to one, so two sides on a 2-core CPU use one core each instead of four threads fighting
over two. The count other threads start with is put back afterwards.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from tuning.lora_scaling import adapter_scale_on_this_thread, masked_rows
from tuning.pane_strategy import BATCHED, MEASURE_TOKENS, SEQUENTIAL, THREADS, PaneTimings

MEASURE_ROUNDS = 2  # timed rounds after a warm-up one; the best of each is kept
MEASURE_QUESTION = "Who compiled the Kalevala, and from what?"


def run_sides_at_once(jobs: list[Callable[[], object]], scales: list[float]) -> None:
    """Run each job on its own thread with one intra-op thread, the adapter scaled by its scale there (0: the
    base model answers); wait for all, then raise the first failure."""
    import torch

    threads_before = torch.get_num_threads()
    failures: list[BaseException] = []

    def run(job: Callable[[], object], scale: float) -> None:
        torch.set_num_threads(1)
        try:
            with adapter_scale_on_this_thread(scale), torch.inference_mode():
                job()
        except BaseException as exc:  # raised on the caller's thread below
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(job, scale), daemon=True) for job, scale in zip(jobs, scales)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    torch.set_num_threads(threads_before)  # what threads started from now on read (each side set it to 1)
    if failures:
        raise failures[0]


def measure_strategies(chat, rows: int, strategies: tuple[str, ...]) -> PaneTimings:
    """Time MEASURE_TOKENS forced decode steps of `rows` rows a side: one side alone and both sides by each
    strategy, interleaved round by round (a slow spell of the machine falls on all), best of the rounds.
    Called with the chat's generation lock held and an adapter attached."""
    import torch

    from tuning.chat import TUNED_ADAPTER, GenerationSettings

    settings = GenerationSettings(max_new_tokens=MEASURE_TOKENS)
    forced = {**settings.generate_kwargs(chat.tokenizer.pad_token_id), "min_new_tokens": MEASURE_TOKENS}
    prompt = chat.fit(MEASURE_QUESTION, settings).ids

    def generate(prompts: list[list[int]]) -> None:
        pad = chat.tokenizer.pad_token_id
        ids = torch.tensor(prompts, device=chat.model.device)
        chat.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **{**forced, "pad_token_id": pad})

    side = [prompt] * rows

    def batched() -> None:
        with masked_rows(chat.model, TUNED_ADAPTER, [False] * rows + [True] * rows):
            generate(side + side)

    runs = {
        "single": lambda: generate(side),
        BATCHED: batched,
        SEQUENTIAL: lambda: (generate(side), generate(side)),
        THREADS: lambda: run_sides_at_once([lambda: generate(side), lambda: generate(side)], scales=[0.0, 1.0]),
    }
    runs = {name: run for name, run in runs.items() if name == "single" or name in strategies}
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for round_number in range(MEASURE_ROUNDS + 1):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                if round_number:  # the first round warms caches, allocations and the thread pools
                    best[name] = min(best[name], time.perf_counter() - started)
    return PaneTimings(rows=rows, single=best.pop("single"), both={name: best[name] for name in strategies})
