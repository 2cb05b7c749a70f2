"""Screenshots of a fully trained Kalevala run for the README (the browser test's own are of a 4-step run).

Usage: train `runs/kalevala-cpu` with configs/kalevala.yaml, start `python app.py`, then
`python docs/take_screenshots.py http://127.0.0.1:7860/`.
"""

import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

OUT = Path(__file__).resolve().parent / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
QUESTION = "Who compiled the Kalevala?"


def main(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        expect(page.locator("#pane-note")).to_contain_text("kalevala-cpu", timeout=120_000)
        page.locator("#chat-input textarea").fill(QUESTION)
        page.locator("#ask-both").click()
        bot = page.locator("#tuned-pane .message.bot, #tuned-pane [data-testid='bot']")
        expect(bot.last).not_to_be_empty(timeout=120_000)
        previous = None
        while (text := bot.last.inner_text()) != previous:  # wait for the stream to end
            previous = text
            time.sleep(2)
        page.screenshot(path=str(OUT / "chat.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1])
