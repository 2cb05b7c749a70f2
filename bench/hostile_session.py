"""A visitor's browser session on a running app, through its HTTP API (gradio_client), keeping every reply and
what it shows; and stopping the app with whatever training it started. For bench/reliability_hostile.py."""

from __future__ import annotations

import html
import os
import re
import signal
import time
from pathlib import Path

from helpers import stop_process

# ui's names (importing ui.chat_tab or ui.generate_panel here would set up a training queue in the cwd)
BASE_ONLY, CUT_NOTE_TITLE = "(base model only)", "Conversation cut to fit"
LOCAL, OPENAI, PROVIDERS = ("Local model (runs here, offline)", "OpenAI-compatible endpoint",
                            "Hugging Face Inference Providers")
PASSAGE = ("Elias Lönnrot compiled the Kalevala from folk poems he collected in Karelia. The first edition "
           "appeared in 1835 and the longer edition in 1849. The poems were sung by rune singers.")


class Reply:
    """One API call's outcome: the value, or the app's error message, and the seconds it took."""

    def __init__(self, value, error: str, seconds: float) -> None:
        self.value, self.error, self.seconds = value, error, seconds

    @property
    def text(self) -> str:
        """Everything a visitor reads in it: the error, or every string of the value but file handles'."""
        return self.error or "\n".join(_strings(self.value))

    @property
    def page(self) -> str:
        """The message as a page shows it (tables left out): HTML tags dropped, entities decoded, spaces collapsed."""
        text = self.error or "\n".join(_strings(self.value, tables=False))
        return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())

    @property
    def message(self) -> str:
        """The page from its message on (Generate's counters before it left out)."""
        page = self.page
        starts = [page.find(mark) for mark in ("Nothing generated:", "Stopped:", "batch 1 ·") if mark in page]
        return page[min(starts):] if starts else page


def _strings(value, tables: bool = True) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "path" in value and ("url" in value or "meta" in value):  # a file handle: gradio's own protocol
            return []
        if not tables and "headers" in value and "data" in value:
            return []
        return [text for key, item in value.items() if key != "__type__" for text in _strings(item, tables)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _strings(item, tables)]
    return []


class Session:
    """One browser session on the app, identified as the page would be; every reply is kept for the searches."""

    def __init__(self, url: str, replies: list[Reply]) -> None:
        from gradio_client import Client

        self.client, self.replies = Client(url, verbose=False, download_files=False), replies
        self.call("/identify", None)
        self.call("/adapter_choices", None)

    def call(self, api_name: str, *args, **kwargs) -> Reply:
        """Call an endpoint; a gr.Error comes back as the reply's error."""
        started = time.perf_counter()
        try:
            value, error = self.client.predict(*args, api_name=api_name, **kwargs), ""
        except Exception as caught:  # noqa: BLE001 -- the API raises the app's gr.Error (and "queue is full") as an exception
            value, error = None, str(caught) or type(caught).__name__
        self.replies.append(Reply(value, error, time.perf_counter() - started))
        return self.replies[-1]

    def generate(self, **values) -> Reply:
        """Press Generate (the local model on the passage, one batch, unless told otherwise)."""
        values = {"files": None, "pasted": PASSAGE, "choice": LOCAL, "base_url": "", "model": "m", "api_key": "",
                  "in_flight": 1, "per_batch": 10, "batches": 1, "off_topic": 0, "topic": "", "judge": False,
                  "min_judge": 5, "duplicate_threshold": 0.9, **values}
        return self.call("/generate", **values)

    def ask(self, question: str, history=([], []), tokens: int = 16) -> Reply:
        """Ask both panes (base model only)."""
        return self.call("/ask_both", question, history[0], history[1], BASE_ONLY, "", tokens, True, 0.7, 50, 1.0, 1.0)

    def knobs(self) -> list:
        """The Kalevala example loaded and the Train tab's knobs for its preset."""
        self.call("/load_kalevala")
        return list(self.call("/preset_values", "kalevala").value)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is pid (the app's training processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def stop_app(server) -> None:
    """Stop the app, then any training process it left behind (by id: ours)."""
    children = _children(server.pid)
    stop_process(server)
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
