"""Concurrent visitors, measured (issue 8): side-by-side chat latency alone vs with five visitors chatting at
once while a training run goes on and another visitor's run waits in the queue; then one visitor flooding
the chat with questions while another asks one -- on a real app server run as a shared Space would run it
(`python app.py` on 127.0.0.1, KANTELE_SHARED=1, a fresh home), through its HTTP API (gradio_client), one
session per visitor.

`measure()` returns (figure, value) pairs for docs/RELIABILITY.md; run as a script it prints them.

    python bench/reliability_load.py [--run RUN_DIR] [--tokens 32]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # run from anywhere; the simulated visitors live in tests/

from helpers import start_app_server, stop_process  # noqa: E402
from visitors import (  # noqa: E402
    QUESTIONS,
    Visitor,
    chat_concurrently,
    cross_talk,
    flood,
    percentiles,
)

CHATTERS = 5
FLOOD = 20  # questions one visitor sends at once (what the hostile-visitor report tried)
TRAINING_STEPS = 400  # outlasts the chats; stopped at the end
DEFAULT_RUN = ROOT / "runs" / "kalevala-cpu"


def _latency_text(stats: dict) -> str:
    return f"p50 {stats['p50']:.1f} s, p95 {stats['p95']:.1f} s (n={stats['n']})"


def measure(run_dir: Path = DEFAULT_RUN, tokens: int = 32) -> list[tuple[str, str]]:
    """Chat alone, then under load; returns (figure, value) pairs."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kantele-load-") as tmp:
        home = Path(tmp)
        shutil.copytree(run_dir, home / "runs" / run_dir.name)  # a finished run from the shell: open to all
        server, url = start_app_server(home, {"HF_HUB_OFFLINE": "1", "KANTELE_SHARED": "1"})
        try:
            chatters = [Visitor(url, f"chatter {n}") for n in range(1, CHATTERS + 1)]
            chatters[0].ask(QUESTIONS[0], ([], []), run_dir.name, 16)  # load the model once, untimed
            alone = [chatter.ask(QUESTIONS[n], ([], []), run_dir.name, tokens)[2]
                     for n, chatter in enumerate(chatters)]
            trainer, queuer = Visitor(url, "trainer"), Visitor(url, "queuer")
            trainer.start_training(TRAINING_STEPS)
            queuer.start_training(TRAINING_STEPS)
            queued = queuer.progress()
            results = chat_concurrently(chatters, run_dir.name, tokens)
            still_training = trainer.progress()
            queuer.stop()
            trainer.stop()
            _wait_until_ended(trainer)  # the flood is measured on an otherwise idle app
            flooded, victim_idle, victim_flooded = _flood_case(url, run_dir.name, tokens)
        finally:
            stop_process(server)
    problems = cross_talk(results)
    loaded = [seconds for result in results for seconds in result.get("latencies", [])]
    alone_stats, load_stats = percentiles(alone), percentiles(loaded)
    return [
        ("visitors chatting at once", f"{CHATTERS}, two questions each, {tokens}-token answers, both panes"),
        ("answered", f"{len(loaded)} of {CHATTERS * 2} questions"),
        ("cross-talk (a history, dataset or run seen by another session)", "; ".join(problems) or "none"),
        ("training run during the chats", "still training" if "Training" in still_training else still_training),
        ("sixth visitor's run", "queued, position 1" if "position 1" in queued else queued),
        ("chat latency alone", _latency_text(alone_stats)),
        ("chat latency under load", _latency_text(load_stats)),
        ("p50 under load / alone", f"{load_stats['p50'] / alone_stats['p50']:.1f}x"),
        ("p95 under load / alone", f"{load_stats['p95'] / alone_stats['p95']:.1f}x"),
        ("one visitor floods", f"{FLOOD} questions at once: {flooded['answered']} answered, {flooded['refused']} "
                               f"turned away ({'; '.join(flooded['reasons']) or 'none'})"),
        ("another visitor's answer, idle app / during the flood",
         f"{victim_idle:.1f} s / {victim_flooded:.1f} s = {victim_flooded / victim_idle:.1f}x"),
        ("wall time", f"{time.monotonic() - started:.0f} s"),
    ]


def _wait_until_ended(visitor: Visitor, timeout_s: float = 300) -> None:
    """Until the visitor's run shows as stopped, failed or finished (a graceful stop ends its step first)."""
    deadline = time.monotonic() + timeout_s
    while not any(word in visitor.progress() for word in ("**Stopped**", "**Failed**", "**Finished**")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{visitor.name}'s run did not end within {timeout_s:.0f} s")
        time.sleep(1.0)


def _flood_case(url: str, adapter: str, tokens: int) -> tuple[dict, float, float]:
    """A flooder's burst of questions and another visitor's one question asked during it, vs on an idle app."""
    import threading

    flooder, victim = Visitor(url, "flooder"), Visitor(url, "victim")
    idle = victim.ask(QUESTIONS[1], ([], []), adapter, tokens)[2]
    burst: dict = {}
    thread = threading.Thread(target=lambda: burst.update(flood(flooder, QUESTIONS[0], adapter, tokens, FLOOD)))
    thread.start()
    time.sleep(1.0)  # the flood is in before the other visitor asks
    during = victim.ask(QUESTIONS[1], ([], []), adapter, tokens)[2]
    thread.join()
    return burst, idle, during


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="a finished run to chat with")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer")
    args = parser.parse_args()
    for figure, value in measure(args.run, args.tokens):
        print(f"{figure}: {value}")
