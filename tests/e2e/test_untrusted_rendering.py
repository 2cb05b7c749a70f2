"""Text the app didn't write renders without images or HTML in a real browser: an imported run whose
scorecard answers hold a Markdown image and an <img> tag pointing at a beacon server on 127.0.0.1 shows
them as text in the model-card preview, and the browser never asks the beacon for anything. Chat's retrieval
switch shows the passages of the run's source document both panes were given (unit tests: tests/chat/
test_chat_retrieval.py, which also renders a hostile document's passages inert)."""

import http.server
import json
import re
import shutil
import threading

from cluster_runs import zip_folder
from playwright.sync_api import expect

from tuning.runs.files import EVAL_FILE


class Beacon(http.server.BaseHTTPRequestHandler):
    """Records every request: a tracking pixel would be one."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Beacon.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


def run_zip_with_beacons(trained_run, tmp_path, beacon_url: str):
    """The shared trained run, its scorecard answers rewritten to hold a Markdown image and an HTML image."""
    run = tmp_path / "beacon-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    report = json.loads((run / EVAL_FILE).read_text())
    for row in report["questions"]:
        row["base"] = f"![pixel]({beacon_url}/markdown.png) base"
        row["tuned"] = f'<img src="{beacon_url}/html.png"> tuned'
    (run / EVAL_FILE).write_text(json.dumps(report))
    return zip_folder(run, tmp_path / "beacon-run.zip")


def test_an_imported_scorecard_renders_inert_in_the_card_preview(app_server, browser, trained_run, tmp_path):
    url, _ = app_server
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Beacon)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    beacon_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text("Import a trained adapter (.zip)").click()
        page.locator("#import-adapter-file input[type=file]").set_input_files(
            str(run_zip_with_beacons(trained_run, tmp_path, beacon_url)))
        expect(page.locator("#import-adapter-status")).to_contain_text("Imported as", timeout=120_000)
        page.get_by_role("tab", name="Publish").click()
        card = page.locator("#model-card")
        expect(card).to_contain_text("How to use", timeout=60_000)
        # The Markdown image is left a plain link (loaded only if clicked), the tag shows as text...
        expect(card).to_contain_text("pixel base")
        expect(card).to_contain_text('<img src="' + beacon_url)
        assert card.locator("a[href*='markdown.png']").count() >= 1
        assert card.locator("img").count() == 0  # ...and nothing is an image
        page.wait_for_timeout(1500)  # time for a browser to fetch an image it was shown
        page.close()
    finally:
        server.shutdown()
    assert Beacon.hits == []


def test_with_retrieval_on_both_panes_show_the_passages_they_were_given(app_server, browser, trained_run, tmp_path):
    """The trained run (on the Kalevala pairs) imported, the switch turned on: both panes answer and show the
    passages from the Kalevala source, collapsed, opening on their file and character span."""
    url, _ = app_server
    run = tmp_path / "retrieval-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_text("Import a trained adapter (.zip)").click()
    page.locator("#import-adapter-file input[type=file]").set_input_files(
        str(zip_folder(run, tmp_path / "retrieval-run.zip")))
    expect(page.locator("#import-adapter-status")).to_contain_text("Imported as", timeout=120_000)
    expect(page.locator("#pane-note")).to_contain_text("adapter", timeout=60_000)
    page.locator("#with-retrieval input[type=checkbox]").check()
    page.locator("#chat-input textarea").fill("Who compiled the Kalevala?")
    page.locator("#ask-both").click()
    for pane in ("#base-pane", "#tuned-pane"):
        expect(page.locator(pane)).to_contain_text("Passages used (BM25, top 1 of", timeout=180_000)
        expect(page.locator(pane)).to_contain_text("from source.md")
    tuned = page.locator("#tuned-pane")
    tuned.get_by_text("Passages used").click()  # open the collapsed note
    expect(tuned).to_contain_text(re.compile(r"\[1\] source\.md, characters [\d,]+–[\d,]+"), timeout=30_000)
    page.close()
