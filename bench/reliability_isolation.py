"""Isolation and secrets, measured on a real app server (`python app.py` on 127.0.0.1, a fresh home):

- crafted file paths (absolute, relative, encoded, traversing, symlinked, remote) through every file route,
  and how many the server refused -- while the page, its assets and an uploaded file still load;
- visitor B sending visitor A's run id to every handler that takes one, over the app's HTTP API, and to the
  engine's check directly, and how many were refused;
- a canary token sent through every flow over the HTTP API -- a 2-step training run, the side-by-side
  chat, QA generation from an OpenAI-compatible endpoint (the canary is the API key), publish to a fake
  Hub (the canary typed in as the token) -- with a second canary as the server's own HF_TOKEN; then every
  file of the app's home, the server log and every API reply are searched for both (raw, hex, url-encoded,
  base64 at each alignment).

    .venv/bin/python bench/reliability_isolation.py

`measure()` returns [(figure, value as text)] for docs/RELIABILITY.md; run as a script it prints them.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # run from anywhere; the fake servers and probes live in tests

from fake_hub import CANARY, FakeHub  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from helpers import TINY_TRAIN, TINY_VALIDATION, start_app_server, stop_process, write_jsonl  # noqa: E402
from leak_checks import (  # noqa: E402
    SERVER_TOKEN_CANARY,
    crafted_paths,
    files_under,
    find_secrets,
    own_files_load,
    plant_private_files,
    probe,
)

from tuning.runs.owner import Owner, RunAccessError, new_visitor_id, read_owner  # noqa: E402
from tuning.runs.queue import TrainingQueue  # noqa: E402

BASE_ONLY = "(base model only)"  # ui.chat_tab.BASE_ONLY; importing ui here would set up an app queue in the cwd
TRAIN_TIMEOUT_S = 300
REFUSAL = "no run of yours"
# Knobs in the Train tab's order: preset, model, epochs, max steps, lr, LoRA r, alpha, dropout, batch, accum,
# max length, 4-bit -- a 2-step run on the tiny data.
TINY_KNOBS = ["kalevala", "auto", 1, 2, 0.002, 8, 16, 0.05, 4, 1, 64, True, 4, []]  # ..., scorecard questions, probes
CHAT_CONTROLS = [16, True, 0.7, 50, 1.0, 1.0]  # max new tokens, greedy, temperature, top-k, top-p, penalty
PASSAGE = ("Elias Lönnrot was a Finnish physician who collected folk poems in Karelia. He published the first "
           "edition of the Kalevala in 1835 with thirty-two poems. The expanded edition of 1849 has fifty poems "
           "and nearly twenty-three thousand verses. Kalevala Day is celebrated in Finland on the 28th of February.")


class Recorder:
    """A gradio_client for one visitor that keeps every API reply as text, for the canary search."""

    def __init__(self, url: str, name: str, replies: dict[str, str]) -> None:
        from gradio_client import Client

        self.client, self.name, self.replies = Client(url, verbose=False), name, replies

    def call(self, api_name: str, *args):
        """One API call; the reply is recorded (an error's message too) and returned (errors as the text)."""
        try:
            result = self.client.predict(*args, api_name=api_name)
        except Exception as error:  # noqa: BLE001 -- the API turns a gr.Error into an exception carrying its message
            result = f"error: {error}"
        self.replies[f"{self.name} {api_name} #{len(self.replies)}"] = json.dumps(result, default=str,
                                                                                 ensure_ascii=False)
        return result


def train_chat_generate_publish(alice: Recorder, hub: FakeHub, endpoint: FakeOpenAI, data: Path) -> str:
    """Alice's whole flow over the API; returns her run id once it is published."""
    from gradio_client import handle_file

    alice.call("/identify", None)
    alice.call("/load_uploads", [handle_file(str(data))], 0.25)
    run_id, message = alice.call("/start_training", *TINY_KNOBS)
    if not run_id:
        raise RuntimeError(f"training did not start: {message}")
    deadline, progress = time.monotonic() + TRAIN_TIMEOUT_S, ""
    while "**Finished**" not in progress:
        progress = str(alice.call("/poll_run", run_id)[0])
        if time.monotonic() > deadline or "**Failed**" in progress or "**Stopped**" in progress:
            raise RuntimeError(f"run {run_id} did not finish in {TRAIN_TIMEOUT_S} s: {progress}")
        time.sleep(3)
    alice.call("/adapter_choices", BASE_ONLY)  # the page fills the dropdowns; gradio checks values against them
    alice.call("/refresh_runs", None)
    answer = alice.call("/ask_both", "Who compiled the Kalevala?", [], [], run_id, "", *CHAT_CONTROLS)
    if "error" in str(answer)[:20]:
        raise RuntimeError(f"chat failed: {answer}")
    alice.call("/generate", None, PASSAGE, "OpenAI-compatible endpoint", endpoint.url, "fake-qa", CANARY, 1, 10, 1, 0,
               "", False, 6, 0.9)
    pushed = alice.call("/push", run_id, "alice/bench-adapter", True, [], "", CANARY)
    if not str(pushed).startswith("✅") or not hub.repos:
        raise RuntimeError(f"publish failed: {pushed}")
    return run_id


def cross_visitor_attempts(bob: Recorder, run_id: str) -> list[str]:
    """Bob sends Alice's run id to every handler that takes one; what stopped each ("leaked" where nothing did)."""
    bob.call("/identify", None)
    bob.call("/adapter_choices", BASE_ONLY)  # fill his own dropdowns, as his page would
    bob.call("/refresh_runs", None)
    replies = {
        "chat pane note": bob.call("/describe_panes", run_id, ""),
        "chat answer": bob.call("/ask_both", "Who?", [], [], run_id, "", *CHAT_CONTROLS),
        "progress": bob.call("/poll_run", run_id),
        "stop": bob.call("/stop_training", run_id),
        "resume": bob.call("/resume_training", run_id),
        "scorecard table": bob.call("/filter_rows", run_id, "all"),
        "publish dry run": bob.call("/show_plan", run_id, "bob/x", [], ""),
        "push": bob.call("/push", run_id, "bob/x", True, [], "", CANARY),
        "export": bob.call("/export_for_ollama", run_id),
        "publish run list": bob.call("/refresh_runs", None),
        "chat run list": bob.call("/adapter_choices", BASE_ONLY),
    }
    return [_stopped_by(where, json.dumps(reply, default=str, ensure_ascii=False), run_id)
            for where, reply in replies.items()]


def _stopped_by(where: str, reply: str, run_id: str) -> str:
    if REFUSAL in reply:
        return "the ownership check"
    if "is not in the list of choices" in reply:
        return "gradio's check of the dropdown's choices"
    if where.endswith("list") and run_id not in reply:
        return "not listed"
    if where == "scorecard table" and '"data": []' in reply:
        return "an empty table"
    return f"leaked: {where}"


def engine_attempts(runs_dir: Path, strangers: int = 50) -> tuple[int, int]:
    """(attempts, refused): strangers asking the engine, by id, for every run that has an owner."""
    queue = TrainingQueue(runs_dir)
    owned = [run_id for run_id in queue.list_runs() if read_owner(queue.run_dir(run_id))]
    attempts = refused = 0
    for _ in range(strangers):
        stranger = Owner(new_visitor_id())
        for run_id in owned:
            attempts += 1
            try:
                queue.owned_run_dir(run_id, stranger)
            except RunAccessError:
                refused += 1
    return attempts, refused


def measure() -> list[tuple[str, str]]:
    """Run the whole measurement; returns (figure, value) pairs."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kantele-isolation-") as tmp, FakeHub() as hub, \
            FakeOpenAI(CANARY, echo_key_in_errors=1) as endpoint:
        home = Path(tmp)
        hub.add_token(CANARY, "alice", "write")
        data = write_jsonl(home / "tiny.jsonl", TINY_TRAIN + TINY_VALIDATION)
        server, url = start_app_server(home, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url,
                                              "HF_HOME": str(home / "hf-home"), "HF_TOKEN": SERVER_TOKEN_CANARY,
                                              "GRADIO_TEMP_DIR": str(home / "gradio")})
        replies: dict[str, str] = {}
        try:
            run_id = train_chat_generate_publish(Recorder(url, "alice", replies), hub, endpoint, data)
            cross = cross_visitor_attempts(Recorder(url, "bob", replies), run_id)
            planted = plant_private_files(home, home / "gradio")
            probes = probe(url, crafted_paths(home, home / "gradio", planted, url))
            own = own_files_load(url)
        finally:
            stop_process(server)
        engine_tried, engine_refused = engine_attempts(home / "runs")
        files = [path for path in files_under(home) if path != data]
        hits = find_secrets([CANARY, SERVER_TOKEN_CANARY], files, replies)
    served = [p.label for p in probes if not p.refused]
    return [
        ("crafted file paths refused", f"{sum(p.refused for p in probes)} of {len(probes)}"),
        ("crafted paths served", ", ".join(served) or "none"),
        ("the app's own files loading (page, assets, config, an upload)", f"{sum(s == 200 for s in own.values())} "
                                                                          f"of {len(own)}"),
        ("cross-visitor requests over the API refused", f"{sum(not how.startswith('leaked') for how in cross)} "
                                                         f"of {len(cross)}"),
        ("what refused them", "; ".join(f"{cross.count(how)} {how}" for how in sorted(set(cross)))),
        ("cross-visitor lookups in the engine refused", f"{engine_refused} of {engine_tried}"),
        ("canary occurrences found", f"{len(hits)} (in {len(files)} files and {len(replies)} API replies)"),
        ("generator requests that carried the canary as their key",
         str(endpoint.authorizations.count(f"Bearer {CANARY}"))),
        ("wall time", f"{time.monotonic() - started:.0f} s"),
    ]


if __name__ == "__main__":
    for figure, value in measure():
        print(f"{figure}: {value}")
