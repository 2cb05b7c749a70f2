"""Hostile visitors, measured: every attack of the hostile-visitor report, re-run against a real shared app
(`python app.py` on 127.0.0.1, KANTELE_SHARED=1, a canary as the owner's HF_TOKEN, a fresh home) through its HTTP
API (gradio_client), with loopback HTTP servers that record every request as the targets. Each row names the
attack, the cap or rule that applies now (tuning/guards/caps.py's caps, or the rule) and what the app did.

No packet leaves loopback: an internal address goes to the app only after the app's own check
(tuning.guards.safe_url.check_url) has refused it here, so the app refuses it before connecting. The upload attacks and
many rows are bench/hostile_uploads.py's figures (its own small app); the chat flood is in
bench/reliability_load.py too.

    .venv/bin/python bench/reliability_hostile.py

`measure()` returns [(figure, value as text)] for docs/RELIABILITY.md; run as a script it prints them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "guards"), str(ROOT / "bench")]  # the probes live in tests

import hostile_uploads  # noqa: E402
from fake_hub import CANARY  # noqa: E402
from helpers import start_app_server  # noqa: E402
from hostile_session import BASE_ONLY, CUT_NOTE_TITLE, OPENAI, PROVIDERS, Reply, Session, stop_app  # noqa: E402
from leak_checks import find_secrets  # noqa: E402
from test_hostile_endpoints import Recorder  # noqa: E402
from test_hostile_generation import write_pdf  # noqa: E402
from visitors import flood, text_of, user_turns  # noqa: E402

from tuning.data.files import MB  # noqa: E402
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_ENV, caps  # noqa: E402
from tuning.guards.safe_url import ALLOWED_ENDPOINTS_ENV, AddressRefused, check_url  # noqa: E402
from tuning.models.names import MODEL_REFUSED  # noqa: E402
from ui.untrusted import inert_markdown  # noqa: E402

SECRET_BODY = "db-password=hunter2-SECRET-in-error-page"
ERROR_PAGE = json.dumps({"error": {"message": f"internal failure, {SECRET_BODY}"}}).encode()
OVERLONG = "Tell me about the Kalevala. " * 2500 + "Who compiled it?"  # 70,016 characters
REPORTED_OVERLONG_S = 234  # the hostile-visitor report: one such question held the chat model this long
IMAGE_ATTACKS = ["![beacon](http://127.0.0.1:9/b.png)", "<img src=http://127.0.0.1:9/b.png>",
                 "![x][ref]\n\n[ref]: http://127.0.0.1:9/b.png", "<script>alert(1)</script>",
                 "a < b and c > d, `x<y`, ![not](an image)", "\u200b<already"]
KNOB_MODEL, KNOB_STEPS, KNOB_SCORECARD = 0, 2, 11  # in the Train tab's knobs after the preset
STOP_WAIT_S = 240
HTML_PAGE = b"<html><body>Welcome to nginx!</body></html>"  # a 200 that is not a chat completion
NOT_HELD: list[str] = []  # attacks the app let through, for the last row


@contextmanager
def _shared_here():
    """KANTELE_SHARED=1 in this process for a moment: to read the caps the shared app runs with."""
    before = os.environ.get(SHARED_ENV)
    os.environ[SHARED_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(SHARED_ENV) if before is None else os.environ.__setitem__(SHARED_ENV, before)


def cap(name: str) -> str:
    """A cap as the shared app has it: its name, value and the setting that changes it."""
    with _shared_here():
        value = getattr(caps(), name)
    return f"cap {name} = {value:,} ({CAP_ENV_PREFIX}{name.upper()})"


def short(text: str, limit: int = 400) -> str:
    """A message, cut for a table cell."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def verdict(attack: str, held: bool, measured: str) -> str:
    """The measured text, marked (and the attack listed for the last row) when the app did not hold."""
    if held:
        return measured
    NOT_HELD.append(attack)
    return f"DID NOT HOLD: {measured}"


def row(attack: str, rule: str, held: bool, measured: str) -> tuple[str, str]:
    """(attack, "rule -> measured result")."""
    return attack, f"{rule} → {verdict(attack, held, measured)}"


# --- the attacks ---------------------------------------------------------------------------------------------

def generation_rows(url: str, replies: list[Reply], folder: Path, recorder, error_page, not_json) -> list:
    """1-3, 5 (a document over the size cap) and 6: Generate's backends, addresses, documents and PDF bombs."""
    from gradio_client import handle_file

    s = Session(url, replies)
    rows = []
    shown = s.generate(choice=PROVIDERS, model="meta-llama/Llama-3.1-8B-Instruct", api_key="")
    held = "Nothing generated" in shown.page and "your own Hugging Face token" in shown.page
    rows.append(row("1. owner's token for visitors: Inference Providers with an empty key",
                    "rule: a shared app never lends its HF_TOKEN; a visitor's own token or sign-in only", held,
                    f"refused in {shown.seconds:.2f} s: {short(shown.message)}"))
    shown = s.generate(batches=3_000_000)
    held = "Nothing generated" in shown.page and "over this app's limit" in shown.page
    rows.append(row("2. unbounded batch count: Generate with batches=3,000,000", cap("generate_batches"), held,
                    f"refused in {shown.seconds:.2f} s: {short(shown.message)}"))
    rows += ssrf_rows(s, recorder, error_page, not_json)
    big = folder / "whole-library.txt"
    with open(big, "wb") as handle:
        handle.truncate(21 * MB)  # sparse here; 21 MB of zeros travel to the app
    shown = s.generate(files=[handle_file(str(big))], pasted="")
    held = "Nothing generated" in shown.page and "over this app's limit of 20 MB" in shown.page
    rows.append(row("5. a 21 MB document to Generate from", cap("source_mb"), held,
                    f"refused in {shown.seconds:.1f} s (the upload included): {short(shown.message)}"))
    for pages, name, what in ((10, "brochure.pdf", "pdf_seconds"), (1_000, "thousand.pdf", "pdf_pages")):
        bomb = folder / name
        write_pdf(bomb, pages=pages, operators=400_000)
        shown = s.generate(files=[handle_file(str(bomb))], pasted="")
        held = "Nothing generated" in shown.page and "this app's limit" in shown.page
        rows.append(row(f"6. PDF bomb: {pages:,} pages sharing one content stream of 400,000 operators "
                        f"({bomb.stat().st_size:,} bytes)", cap(what), held,
                        f"refused in {shown.seconds:.1f} s: {short(shown.message)}"))
    return rows


def ssrf_rows(s: Session, recorder, error_page, not_json) -> list:
    """3. A visitor's base URL into the app's own network; an allowed endpoint's error page and a non-JSON reply."""
    targets = [recorder.url, "http://169.254.169.254/latest/meta-data", "http://10.0.0.1:8000/v1",
               f"http://[::1]:{recorder.port}/v1", f"http://localhost:{recorder.port}/v1"]
    refused, messages, unsent = 0, [], []
    for target in targets:
        try:
            check_url(target)  # the app's own check, here: what it lets through is not sent to it
        except AddressRefused:
            pass
        else:
            unsent.append(target)
            continue
        shown = s.generate(choice=OPENAI, base_url=target, api_key="sk-visitor")
        if "Nothing generated" in shown.page and ("not a public internet address" in shown.page
                                                   or "metadata" in shown.page):
            refused += 1
        messages.append(f"{target} in {shown.seconds:.2f} s")
    example = next((r.message for r in reversed(s.replies) if "169.254.169.254" in r.page), "")
    rule = "rule: public addresses only, checked after DNS and on every request and redirect (tuning/guards/safe_url.py)"
    rows = [row("3. SSRF: base URL at loopback (a recorder), 169.254.169.254, 10.0.0.1, [::1], localhost", rule,
                refused == len(targets) and not recorder.requests,
                f"{refused} of {len(targets)} refused ({'; '.join(messages)}); requests that reached the recorder: "
                f"{len(recorder.requests)}" + (f"; NOT refused by the check here, so not sent: {unsent}" if unsent
                                                else "") + f"; e.g. {short(example)}")]
    shown = s.generate(choice=OPENAI, base_url=error_page.url, api_key="sk-visitor")
    whole = json.dumps(shown.value, default=str) + shown.error
    leaked = SECRET_BODY in whole or "hunter2" in whole
    rows.append(row("3. an allowed endpoint (the owner's KANTELE_ALLOWED_ENDPOINTS) answers 500 with a secret body",
                    "rule: an endpoint's error shows its status, never its body",
                    not leaked and "HTTP 500" in shown.page and bool(error_page.requests),
                    f"{len(error_page.requests)} requests reached it; shown: {short(shown.message)}; secret body "
                    f"shown: {'yes' if leaked else 'no'}"))
    shown = s.generate(choice=OPENAI, base_url=not_json.url, api_key="sk-visitor")
    alive = not s.call("/identify", None).error
    held = "failed after" in shown.page and alive
    rows.append(row("3. an allowed endpoint answers 200 with an HTML page", "rule: a reply that is not a chat "
                    "completion fails its batch", held, f"{short(shown.message)}; the app still answers: "
                    f"{'yes' if alive else 'NO'}"))
    return rows


def local_path_rows(url: str, replies: list[Reply], home: Path) -> list:
    """4. Local folders (and a 5,000-character name) as the base model, to Start training and to the estimate."""
    s = Session(url, replies)
    knobs = s.knobs()
    before = set(os.listdir(home / "runs")) if (home / "runs").exists() else set()
    names = {"/etc": "/etc", "the app's runs folder": str(home / "runs"), "a 5,000-character name": "x" * 5000}
    messages, slowest = set(), 0.0
    for name in names.values():
        knobs[KNOB_MODEL] = name
        for api_name in ("/start_training", "/show_estimate"):
            reply = s.call(api_name, "kalevala", *knobs)
            if api_name == "/start_training" and not reply.error and reply.value[0]:
                s.call("/stop_training", reply.value[0])  # the attack got through: not left to train
            text = reply.error or (reply.value[1] if api_name == "/start_training" else reply.value)
            messages.add(re.sub(r"^(\*\*Not started:\*\* |Can't estimate yet: )", "", str(text)))
            slowest = max(slowest, reply.seconds)
    after = set(os.listdir(home / "runs")) if (home / "runs").exists() else set()
    return [row("4. local paths as the base model: " + ", ".join(names) + ", to Start training and Estimate",
                "rule: a shared app takes Hub ids, 'embedded' or 'auto', never a folder; one answer for every refusal",
                messages == {MODEL_REFUSED} and after == before,
                f"{len(messages)} distinct message(s) for {2 * len(names)} requests, slowest {slowest:.2f} s: "
                + " / ".join(short(m) for m in sorted(messages))
                + f"; run folders written: {len(after - before)}")]


def chat_rows(url: str, replies: list[Reply]) -> list:
    """13, 7 and 9: a follow-up question, an overlong question, a flood from one session."""
    s = Session(url, replies)
    first = s.ask("My name is Aino.", tokens=24)  # loads the chat model: the later timings are warm
    second = s.ask("What is my name?", (first.value[0], first.value[1]), tokens=24) if not first.error else first
    base = second.value[0] if not second.error else []
    rows = [row("13. chat history: 'My name is Aino.', then 'What is my name?' with the returned histories sent back",
                "rule: each pane's history is the model's conversation (the app's notes left out)",
                user_turns(base) == ["My name is Aino.", "What is my name?"],
                f"second answer ({second.seconds:.1f} s): {short(text_of(base[-1]) if base else second.error, 200)!r}; "
                f"the pane holds {len(base)} messages, user turns {user_turns(base)}")]
    shown = s.ask(OVERLONG)
    notes = [m for pane in (shown.value or [[], []])[:2] for m in pane
             if (m.get("metadata") or {}).get("title") == CUT_NOTE_TITLE]
    answered = bool(shown.value) and shown.value[0][-1]["role"] == "assistant" and text_of(shown.value[0][-1]).strip()
    rows.append(row(f"7. overlong prompt: a {len(OVERLONG):,}-character question, 16 new tokens, via /ask_both",
                    cap("chat_prompt_tokens") + "; the conversation is cut to fit and the pane says so",
                    bool(answered) and len(notes) == 2,
                    f"answered in {shown.seconds:.1f} s (the report: {REPORTED_OVERLONG_S} s); "
                    f"'{CUT_NOTE_TITLE}' notes: {len(notes)} (one per pane): "
                    f"{short(text_of(notes[0]) if notes else shown.error, 160)}"))
    flooder, other = Session(url, replies), Session(url, replies)
    idle = other.ask("What is the Sampo?")
    burst: dict = {}
    thread = threading.Thread(target=lambda: burst.update(flood(flooder, "Who is Aino?", BASE_ONLY, 16, 20)))
    thread.start()
    time.sleep(1.0)  # the flood is in before the other visitor asks
    during = other.ask("What is the Sampo?")
    thread.join()
    held = burst.get("refused", 0) > 0 and not during.error
    rows.append(row("9. chat flood: 20 questions at once from one session, another session asking meanwhile",
                    cap("chats_per_visitor") + "; " + cap("queue_size"), held,
                    f"{burst.get('answered')} answered, {burst.get('refused')} turned away "
                    f"({'; '.join(burst.get('reasons', [])) or 'none'}); the other visitor's answer took "
                    f"{idle.seconds:.1f} s on an idle app, {during.seconds:.1f} s during the flood"
                    + (f" -- {during.error}" if during.error else "")
                    + " (bench/reliability_load.py measures the same with training going on)"))
    return rows


def path_rows(url: str, replies: list[Reply], home: Path, folder: Path) -> list:
    """12. Bad requests, and every other reply of this bench: does any show a server path?"""
    from gradio_client import handle_file

    s = Session(url, replies)
    fake_zip = folder / "x.zip"
    fake_zip.write_bytes(b"this is not a zip archive\n" * 10)
    bad_data = folder / "bad.jsonl"
    bad_data.write_text('{"prompt": "only a prompt"}\n{not json\n', encoding="utf-8")
    fake_pdf = folder / "scan.pdf"
    fake_pdf.write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    knobs = s.knobs()
    knobs[KNOB_MODEL] = "kantele-tests/no-such-model"
    bad = {"a non-zip named x.zip to the adapter import": s.call("/import_trained_adapter", handle_file(str(fake_zip))),
           "a bad data file to the Data tab": s.call("/load_uploads", [handle_file(str(bad_data))], 0.1),
           "a Hub model that can't be fetched, to the estimate": s.call("/show_estimate", "kalevala", *knobs),
           "a Hub adapter that can't be fetched, to the chat": s.call(
               "/ask_both", "Hi", [], [], BASE_ONLY, "kantele-tests/no-such-adapter", 16, True, 0.7, 50, 1.0, 1.0),
           "a broken PDF to Generate": s.generate(files=[handle_file(str(fake_pdf))], pasted="")}
    server_paths = sorted({str(home), str(ROOT), "/tmp", str(Path.home()), tempfile.gettempdir()}, key=len,
                          reverse=True)

    def shown_paths(reply: Reply) -> list[str]:
        return [path for path in server_paths if path in reply.text]

    findings = [f"{what}: {short(reply.message, 160)!r} -> {'shows ' + ', '.join(found) if found else 'no path'}"
                for what, reply in bad.items() for found in [shown_paths(reply)]]
    others = [reply for reply in replies if all(reply is not b for b in bad.values())]
    with_paths = [short(reply.page, 120) for reply in others if shown_paths(reply)]
    return [row(f"12. server paths in {len(bad)} bad requests", "rule: messages for visitors carry no server paths "
                "(tuning/guards/server_paths.py, ui/messages.py); checked for the app home, the repo, /tmp, the home folder",
                not any(shown_paths(reply) for reply in bad.values()), " · ".join(findings)),
            row("12. server paths in every other reply of this bench", "the same rule", not with_paths,
                f"{len(with_paths)} of {len(others)} replies show one" + (f": {with_paths[:3]}" if with_paths else ""))]


def training_rows(url: str, replies: list[Reply]) -> list:
    """8. A run that would hold the training slot for ever, and a second run from the same visitor."""
    s = Session(url, replies)
    knobs = s.knobs()
    knobs[KNOB_STEPS] = 1_000_000_000
    huge = s.call("/start_training", "kalevala", *knobs)
    run_id, message = huge.value if not huge.error else (None, huge.error)
    rows = [row("8. training slot: max_steps=1,000,000,000", cap("training_steps"), run_id is None,
                f"refused in {huge.seconds:.2f} s: {short(message)}")]
    if run_id:
        s.call("/stop_training", run_id)
    knobs[KNOB_STEPS], knobs[KNOB_SCORECARD] = 3, 1
    first = s.call("/start_training", "kalevala", *knobs)
    first_id = first.value[0] if not first.error else None
    again = s.call("/start_training", "kalevala", *knobs)
    again_id, again_message = again.value if not again.error else (None, again.error)
    try:
        rows.append(row("8. training slot: a second run while the visitor's first (3 steps) is queued or training",
                        cap("runs_per_visitor"), bool(first_id) and again_id is None,
                        f"first: {short(first.error or first.value[1], 80)}; second refused in {again.seconds:.2f} s: "
                        f"{short(again_message)}"))
    finally:
        ended = stop_runs(s, [again_id, first_id])
    return rows + [("8. training slot: the first run, stopped (clean-up)", ended)]


def stop_runs(s: Session, run_ids: list[str | None]) -> str:
    """Stop the runs and wait for the last one to end; how long that took and its state."""
    started = time.monotonic()
    for run_id in filter(None, run_ids):
        s.call("/stop_training", run_id)
    progress = "no run"
    while run_ids[-1] and time.monotonic() - started < STOP_WAIT_S:
        reply = s.call("/poll_run", run_ids[-1])
        progress = reply.error or str(reply.value[0])
        if reply.error or not progress.startswith(("**Training**", "**Queued**")):
            break
        time.sleep(1)
    return f"{time.monotonic() - started:.0f} s after Stop: {short(progress, 300)}"


def image_rows() -> list:
    """11. Images and HTML in text the app did not write (unit level; the browser check is an e2e test)."""
    shown = [inert_markdown(text) for text in IMAGE_ATTACKS]
    inert = [text for text in shown if "![" not in text and not re.search(r"<[A-Za-z/!?]", text)]
    return [row(f"11. images in untrusted text: inert_markdown of {len(IMAGE_ATTACKS)} attack strings",
                "rule: model answers, imported scorecards and cards, Hub ids go through ui/untrusted.py inert_markdown "
                "(a zero-width space after every '<' and between '!' and '[')", len(inert) == len(shown),
                f"{len(inert)} of {len(shown)} with no '![' and no '<' before a letter; in a browser: "
                "tests/e2e/test_untrusted_rendering.py")]


def upload_rows() -> list:
    """5 and 10: bench/hostile_uploads.py's figures (its own small app), the refusals among them checked."""
    rows = []
    for figure, value in hostile_uploads.measure():
        attack = (f"10. many rows (bench/hostile_uploads.py; {cap('request_rows')}): " if figure.startswith("Data tab")
                  else "5. uploads (bench/hostile_uploads.py): ") + figure
        if "bytes stored" in figure:
            value = verdict(attack, value.startswith("413") and value.endswith(", 0"), value)
        elif "no declared length" in figure:
            value = verdict(attack, value == "411", value)
        elif figure.endswith("message"):
            value = verdict(attack, "over the limit" in value, value)
        rows.append((attack, value))
    return rows


def _attack_number(figure_row: tuple[str, str]) -> int:
    number = re.match(r"\d+", figure_row[0])
    return int(number.group()) if number else 99


def measure() -> list[tuple[str, str]]:
    """Run every attack; returns (figure, value) pairs."""
    started = time.monotonic()
    NOT_HELD.clear()
    replies: list[Reply] = []
    with tempfile.TemporaryDirectory(prefix="kantele-hostile-") as tmp, Recorder() as recorder, \
            Recorder(lambda method, path: (500, {"Content-Type": "application/json"}, ERROR_PAGE)) as error_page, \
            Recorder(lambda method, path: (200, {"Content-Type": "text/html"}, HTML_PAGE)) as not_json:
        home, folder = Path(tmp) / "home", Path(tmp) / "visitor"
        home.mkdir()
        folder.mkdir()
        allowed = f"127.0.0.1:{error_page.port},127.0.0.1:{not_json.port}"
        server, url = start_app_server(home, {SHARED_ENV: "1", "HF_TOKEN": CANARY, "KANTELE_EXAMPLE": "off",
                                              "HF_HUB_OFFLINE": "1", ALLOWED_ENDPOINTS_ENV: allowed,
                                              "GRADIO_TEMP_DIR": str(home / "gradio")})
        try:
            rows = generation_rows(url, replies, folder, recorder, error_page, not_json)
            rows += local_path_rows(url, replies, home)
            rows += chat_rows(url, replies)
            rows += path_rows(url, replies, home, folder)
            rows += training_rows(url, replies)
        finally:
            stop_app(server)
        log = home / "server.log"
        hits = find_secrets([CANARY], [log], {str(n): r.text + json.dumps(r.value, default=str)
                                              for n, r in enumerate(replies)})
    rows.append(row("1. the owner's HF_TOKEN (a canary) anywhere a visitor or the log could see it",
                    "rule: never lent, never shown", not hits,
                    f"{len(hits)} occurrences in the server log and {len(replies)} API replies (raw, hex, "
                    "url-encoded, base64)"))
    rows += image_rows()
    rows += upload_rows()
    rows.sort(key=_attack_number)  # in the report's order; stable within an attack
    rows.append(("attacks that did not hold", "; ".join(NOT_HELD) or "none"))
    rows.append(("wall time", f"{time.monotonic() - started:.0f} s"))
    return rows


if __name__ == "__main__":
    for figure, value in measure():
        print(f"{figure}: {value}", flush=True)
