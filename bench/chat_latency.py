"""Side-by-side chat vs one answer: time to first token, total time for a 64-token answer, peak memory.

Targets (issue 7): both panes <= 1.3x the time of a single answer; peak RSS with both panes <= 1.15x
one model. All timings in one process on the same loaded model, interleaved per question, so drift of
this noisy machine hits every variant alike. Every answer is forced to exactly N tokens (min = max
new tokens): otherwise a rambling base and a terse tuned model would compare lengths, not speed.

Variants: base alone, tuned alone, both panes by each strategy the app can choose (tuning/chat/pane_strategy.py:
one mixed-adapter batched generate; two generates at once, one core each, the adapter off on the base pane's thread),
both panes one after the other (no strategy: it can't stream both at once), and both panes as the app
answers them (the strategy it measured and chose here, named). Memory: peak RSS of a fresh process that
loads the base alone and answers once, vs one that loads base + adapter and answers both panes.

    python bench/chat_latency.py [RUN_DIR] [--questions N] [--tokens T]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from tuning.chat.pane_strategy import CHAT_STRATEGIES, DESCRIPTIONS
from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
from tuning.data.examples import load_examples, user_prompts
from tuning.hardware.machine_cache import cpu_name
from tuning.quiet import quiet_library_noise
from tuning.runs.files import RUN_DATA_DIR, RUN_VALIDATION_FILE

APP = "both panes, as the app answers them"


class FixedLength(GenerationSettings):
    """Greedy decoding of exactly max_new_tokens tokens."""

    def generate_kwargs(self, pad_token_id: int) -> dict:
        return {**super().generate_kwargs(pad_token_id), "min_new_tokens": self.max_new_tokens}


def timed(stream) -> tuple[float, float]:
    """(seconds to the first streamed text, seconds to the end) of a streaming generator."""
    started = time.perf_counter()
    first = None
    for _ in stream:
        if first is None:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started


def variants(chat: SideBySideChat, settings: GenerationSettings) -> dict:
    """Name -> function(question) returning (ttft, total)."""
    def one_after_the_other(question):
        first, base_total = timed(chat.stream(question, adapter_on=False, settings=settings))
        _, tuned_total = timed(chat.stream(question, adapter_on=True, settings=settings))
        return first, base_total + tuned_total

    def both_by(strategy: str | None):
        def run(question):
            chat.strategy_override = strategy
            try:
                return timed(chat.stream_both(question, question, settings))
            finally:
                chat.strategy_override = None
        return run

    return {
        "base alone": lambda q: timed(chat.stream(q, adapter_on=False, settings=settings)),
        "tuned alone": lambda q: timed(chat.stream(q, adapter_on=True, settings=settings)),
        **{f"both panes, {DESCRIPTIONS[strategy]}": both_by(strategy) for strategy in CHAT_STRATEGIES},
        "both panes, one after the other": one_after_the_other,
        APP: both_by(None),
    }


def measure_latency(run_dir: Path, questions: int, tokens: int) -> tuple[dict, str]:
    """Median TTFT and total per variant over the questions, variants interleaved per question; and the
    strategy the app chose here, with its measurement."""
    chat = SideBySideChat.from_run(run_dir)
    timings = chat.pane_strategy()  # the app's own choice, measured (or read from the cache) as in the app
    chosen = timings.summary() if timings else "one batched generate (not measured: a GPU or a 1-core CPU)"
    settings = FixedLength(max_new_tokens=tokens)
    asked = user_prompts(load_examples(run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE).examples)[:questions]
    runs = variants(chat, settings)
    for run in runs.values():  # warm-up: first-call allocations and lazy imports
        run(asked[0])
    samples = {name: [] for name in runs}
    for question in asked:
        for name, run in runs.items():
            samples[name].append(run(question))
    return {name: {"ttft": statistics.median(s[0] for s in values), "total": statistics.median(s[1] for s in values)}
            for name, values in samples.items()}, chosen


def peak_rss_mb(run_dir: Path, panes: str, tokens: int) -> float:
    """Peak RSS (MB) of a fresh process answering one question with one or both panes."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import chat_latency as b; "
            f"b.answer_once({str(run_dir)!r}, {panes!r}, {tokens})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


def answer_once(run_dir: str, panes: str, tokens: int) -> None:
    """In a child process: load what the panes need, answer once, print peak RSS as JSON."""
    from tuning.config import load_recipe
    from tuning.models.loading import resolve_model
    from tuning.runs.files import CONFIG_FILE

    quiet_library_noise()
    settings = FixedLength(max_new_tokens=tokens)
    if panes == "one":
        recipe = load_recipe(Path(run_dir) / CONFIG_FILE)
        chat = SideBySideChat(resolve_model(recipe.model.name, recipe.model.revision), recipe.model,
                              recipe.data.system_prompt)
        timed(chat.stream("Who compiled the Kalevala?", adapter_on=False, settings=settings))
    else:
        chat = SideBySideChat.from_run(run_dir)
        timed(chat.stream_both("Who compiled the Kalevala?", "Who compiled the Kalevala?", settings))
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/kalevala-cpu", type=Path, help="a finished run")
    parser.add_argument("--questions", type=int, default=6, help="held-out questions timed per variant")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer (forced)")
    args = parser.parse_args()
    quiet_library_noise()

    timings, chosen = measure_latency(args.run, args.questions, args.tokens)
    single = statistics.mean(timings[name]["total"] for name in ("base alone", "tuned alone"))
    print(f"on {cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    print(f"the app's strategy here: {chosen}")
    print(f"{args.tokens}-token answers, median of {args.questions} held-out questions (seconds):")
    for name, values in timings.items():
        print(f"  {name:48s} first token {values['ttft']:6.2f}   total {values['total']:6.2f}")
    one, both = peak_rss_mb(args.run, "one", args.tokens), peak_rss_mb(args.run, "both", args.tokens)
    print(f"peak RSS: one model answering {one:,.0f} MB; base + adapter answering both panes {both:,.0f} MB")
    for name, values in timings.items():
        if name.startswith("both panes"):
            print(f"{name} / single answer: {values['total'] / single:.2f}x")
    print(f"the app's side by side / single answer: {timings[APP]['total'] / single:.2f}x   (target <= 1.3)")
    print(f"the app's first tokens: {timings[APP]['ttft']:.2f} s   (target <= 0.5)")
    print(f"peak RSS both panes / one model: {both / one:.2f}x   (target <= 1.15)")


if __name__ == "__main__":
    main()
