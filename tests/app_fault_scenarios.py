"""The faults of tests/fault_scenarios.py caused through a live app server (`python app.py` on 127.0.0.1, over
its HTTP API with gradio_client), checking after each that the page and the API still answer."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fault_scenarios import (
    MISSING_ADAPTER_ID,
    MISSING_HUB_ID,
    RUN_TIMEOUT_S,
    Outcome,
    mount_tmpfs,
    unmount,
)
from helpers import free_port

from tuning.runs.files import FINISHED_STATES, STATUS_FILE, read_status

APP_DISK_MB = 100  # less than one checkpoint (~117 MB): the app's run fails on its first save

# Train tab knobs after the preset (as /preset_values returns them): model, epochs, max steps, lr, LoRA r,
# alpha, dropout, batch, accumulation, max length, 4-bit, scorecard questions, probes, report_to.
MODEL_KNOB, MAX_STEPS_KNOB, BATCH_KNOB, MAX_LENGTH_KNOB, PROBES_KNOB = 0, 2, 7, 9, 12


@dataclass
class AppFault(Outcome):
    """A fault caused through a live app server, and whether the server answered afterwards."""

    survived: bool = False


def app_answers(url: str, client) -> bool:
    """The page loads (HTTP 200) and an API call is answered."""
    try:
        with urllib.request.urlopen(url, timeout=10) as page:
            if page.status != 200:
                return False
        return isinstance(client.predict(None, api_name="/poll_run")[0], str)
    except Exception:  # noqa: BLE001 -- any failure here means "not serving"
        return False


class AppVisitor:
    """One session on a live app (gradio_client), doing what the Train and Chat tabs do."""

    def __init__(self, url: str, home: Path) -> None:
        from gradio_client import Client

        self.url, self.runs = url, home / "runs"
        self.run_id: str | None = None  # what the page keeps in the browser and sends back
        self.client = Client(url, verbose=False)
        self.client.predict(None, api_name="/identify")  # what the page's load event does
        self.client.predict(api_name="/load_kalevala")

    def start(self, model: str, max_steps: int) -> str:
        """Queue a short run of the Kalevala example on model; returns its run id."""
        knobs = list(self.client.predict("kalevala", api_name="/preset_values"))
        knobs[MODEL_KNOB], knobs[MAX_STEPS_KNOB], knobs[BATCH_KNOB], knobs[MAX_LENGTH_KNOB] = model, max_steps, 4, 64
        knobs[PROBES_KNOB] = []  # the probes are for real runs, not a few steps
        _, progress = self.client.predict("kalevala", *knobs, api_name="/start_training")
        found = re.search(r"`([^`]+)`", progress)
        if not found:
            raise RuntimeError(f"the app did not start the run: {progress}")
        self.run_id = found.group(1)
        return self.run_id

    def progress(self) -> str:
        """The Train tab's progress text for this visitor's run."""
        return self.client.predict(self.run_id, api_name="/poll_run")[0]

    def wait_for(self, condition, what: str, timeout: float = RUN_TIMEOUT_S) -> str:
        """Poll the progress text until condition(text) holds; returns the text."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.progress()
            if condition(text):
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; the page shows: {text}")
            time.sleep(0.5)

    def hub_adapter_note(self, repo_id: str) -> str:
        """What the Chat tab says when the visitor types a Hub adapter id."""
        return self.client.predict("(base model only)", repo_id, api_name="/describe_panes")


def _error_of(text: str) -> str:
    return text.split("**Error:**", 1)[-1].strip() if "**Error:**" in text else text


def app_faults(home: Path, runs_disk_mb: int = APP_DISK_MB) -> tuple[list[AppFault], str]:
    """Start `python app.py` (Hub unreachable, runs on a small tmpfs where permitted) and cause each fault
    through its API; after each, check the page and the API still answer. Returns (outcomes, disk note)."""
    from helpers import start_app_server, stop_process

    runs = home / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    mounted = mount_tmpfs(runs, runs_disk_mb)
    server = None
    outcomes: list[AppFault] = []
    try:
        server, url = start_app_server(home, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                              "HF_HOME": str(home / "hf-home")})
        visitor = AppVisitor(url, home)

        def record(fault: str, started: float, state: str, message: str) -> None:
            outcomes.append(AppFault(fault, state, message, time.monotonic() - started,
                                     survived=app_answers(url, visitor.client)))

        started = time.monotonic()
        note = visitor.hub_adapter_note(MISSING_ADAPTER_ID)
        record("Hub unreachable: adapter from the Hub", started, "refused" if "Can't load" in note else "loaded", note)

        started = time.monotonic()
        visitor.start(MISSING_HUB_ID, 2)
        text = visitor.wait_for(lambda t: "**Failed**" in t or "**Finished**" in t, "the bad-model run to end")
        record("model that can't be fetched", started, "failed" if "**Failed**" in text else "completed",
               _error_of(text))

        started = time.monotonic()
        run_id = visitor.start("embedded", 200)
        visitor.wait_for(lambda t: "**Training**" in t and not re.search(r"step 0/", t), "the run's first step")
        os.kill(read_status(runs / run_id)["pid"], signal.SIGKILL)
        text = visitor.wait_for(lambda t: "**Failed**" in t, "the killed run to show as failed", timeout=60)
        record("training killed with SIGKILL", started, "failed", _error_of(text))

        if mounted:
            started = time.monotonic()
            visitor.start("embedded", 1)
            text = visitor.wait_for(lambda t: "**Failed**" in t or "**Finished**" in t, "the run on the full disk")
            record(f"disk full ({runs_disk_mb} MB runs disk)", started,
                   "failed" if "**Failed**" in text else "completed", _error_of(text))
        return outcomes, (f"runs on a {runs_disk_mb} MB tmpfs" if mounted else
                          "no tmpfs mount permitted: the app's disk-full case was not run")
    finally:
        if server is not None:
            for status in runs.glob(f"*/{STATUS_FILE}"):  # a trainer the server started must not outlive it
                pid = read_status(status.parent).get("pid")
                if pid and read_status(status.parent).get("state") not in FINISHED_STATES:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            stop_process(server)
        if mounted:
            unmount(runs)
