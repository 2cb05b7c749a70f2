"""Simulated visitors of a running app, through its real HTTP API (gradio_client): chatters, a trainer
and a queuer, each with its own session. Shared by tests/app/test_concurrent_visitors.py and
bench/reliability_load.py (which reports the latencies)."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

# Distinct questions, so one visitor's words showing up in another's history is cross-talk.
QUESTIONS = ["Who compiled the Kalevala?", "What is the Sampo?", "Who is Väinämöinen?", "Who rules Pohjola?",
             "When is Kalevala Day?", "Who forged the Sampo?", "Who is Aino?", "What is a kantele?"]
FOLLOW_UP = "Say that again in one short sentence."
KNOB_MAX_STEPS = 2  # in the Train tab's knobs after the preset: model, epochs, max steps, ...
KNOB_PROBES = 12  # the scorecard probes (ui/train_tab.py KNOBS' order, which is the tab's HTTP API)


@dataclass
class Visitor:
    """One browser session on the app, identified as the page would be."""

    url: str
    name: str
    client: object = field(init=False, repr=False)
    run_id: str | None = None  # the run this visitor queued, kept by the page in the browser

    def __post_init__(self) -> None:
        from gradio_client import Client

        self.client = Client(self.url, verbose=False)
        # What the page's load events do: identify this browser, then list the runs it may pick.
        self.client.predict(None, api_name="/identify")
        self.client.predict(None, api_name="/adapter_choices")

    def ask(self, question: str, history: tuple[list, list], adapter: str, max_new_tokens: int):
        """Ask both panes; returns (base history, tuned history, seconds taken)."""
        started = time.perf_counter()
        base, tuned, _ = self.client.predict(question, history[0], history[1], adapter, "", max_new_tokens, True,
                                             0.7, 50, 1.0, 1.0, api_name="/ask_both")
        return base, tuned, time.perf_counter() - started

    def converse(self, questions: list[str], adapter: str, max_new_tokens: int) -> tuple[list, list, list]:
        """Ask the questions in one conversation; returns (base history, tuned history, latencies)."""
        history, latencies = ([], []), []
        for question in questions:
            base, tuned, seconds = self.ask(question, history, adapter, max_new_tokens)
            history = (base, tuned)
            latencies.append(seconds)
        return history[0], history[1], latencies

    def start_training(self, max_steps: int, load_example: bool = True) -> str:
        """Load the Kalevala example (unless told not to) and queue a run; returns the message the page shows."""
        if load_example:
            self.client.predict(api_name="/load_kalevala")
        knobs = list(self.client.predict("kalevala", api_name="/preset_values"))
        knobs[KNOB_MAX_STEPS] = max_steps
        knobs[KNOB_PROBES] = []  # the probes are for real runs, not a few steps
        self.run_id, message = self.client.predict("kalevala", *knobs, api_name="/start_training")
        return message

    def progress(self) -> str:
        """The Train tab's progress text for this visitor's run."""
        return self.client.predict(self.run_id, api_name="/poll_run")[0]

    def stop(self) -> str:
        """Stop (or cancel) this visitor's run."""
        return self.client.predict(self.run_id, api_name="/stop_training")


def text_of(turn: dict) -> str:
    """A chat turn's text (Gradio 6 sends content as a list of typed parts)."""
    content = turn["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def user_turns(history: list[dict]) -> list[str]:
    """The user's questions in a pane's history."""
    return [text_of(turn) for turn in history if turn["role"] == "user"]


def chat_concurrently(chatters: list[Visitor], adapter: str, max_new_tokens: int, rounds: int = 2) -> list[dict]:
    """Every chatter holds a conversation of `rounds` questions at the same time as the others."""
    results: list[dict] = [{} for _ in chatters]

    def run(index: int, visitor: Visitor) -> None:
        questions = [QUESTIONS[index % len(QUESTIONS)], FOLLOW_UP][:rounds]
        try:
            base, tuned, latencies = visitor.converse(questions, adapter, max_new_tokens)
            results[index] = {"asked": questions, "base": base, "tuned": tuned, "latencies": latencies}
        except Exception as error:  # noqa: BLE001 -- reported per visitor; one failure must not hide the others
            results[index] = {"asked": questions, "error": repr(error)}

    threads = [threading.Thread(target=run, args=(i, v), daemon=True) for i, v in enumerate(chatters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def flood(visitor: Visitor, question: str, adapter: str, max_new_tokens: int, count: int) -> dict:
    """`count` questions from one session at once (what a script can do): how many were answered and how many
    turned away, and the errors' first words."""
    jobs = [visitor.client.submit(question, [], [], adapter, "", max_new_tokens, True, 0.7, 50, 1.0, 1.0,
                                  api_name="/ask_both") for _ in range(count)]
    answered, refused = 0, []
    for job in jobs:
        try:
            job.result()
            answered += 1
        except Exception as error:  # noqa: BLE001 -- gradio_client raises the app's gr.Error (or "queue is full") here
            refused.append(str(error).splitlines()[0][:160])
    return {"answered": answered, "refused": len(refused), "reasons": sorted(set(refused))}


def cross_talk(results: list[dict]) -> list[str]:
    """Problems: a visitor not answered, or a history holding anything but that visitor's own questions."""
    problems = []
    for number, result in enumerate(results, 1):
        if "error" in result:
            problems.append(f"visitor {number}: {result['error']}")
            continue
        for pane in ("base", "tuned"):
            if user_turns(result[pane]) != result["asked"]:
                problems.append(f"visitor {number} {pane} pane holds {user_turns(result[pane])}")
            answers = [text_of(turn) for turn in result[pane] if turn["role"] == "assistant"]
            if len(answers) != len(result["asked"]) or not all(answer.strip() for answer in answers):
                problems.append(f"visitor {number} {pane} pane: an answer is missing")
    return problems


def percentiles(latencies: list[float]) -> dict:
    """p50 and p95 of latencies, in seconds."""
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "n": len(ordered)}
