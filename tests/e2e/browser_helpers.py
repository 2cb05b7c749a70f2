"""Helpers for the browser tests (a plain module: `conftest` names clash between folders)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("KANTELE_SCREENSHOTS", REPO / "tests" / "e2e" / "screenshots"))


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG for people to inspect."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Tees every fetch response the page reads (the queue's event streams included) into window.__responses,
# chunk by chunk, so a test can grep what the server sent back without slowing the page down.
CAPTURE_RESPONSES_JS = """
(() => {
  const captured = (window.__responses = []);
  const original = window.fetch;
  window.fetch = async (...args) => {
    const response = await original(...args);
    const entry = {url: String(args[0] && args[0].url ? args[0].url : args[0]), text: ""};
    captured.push(entry);
    try {
      const reader = response.clone().body.getReader();
      const decoder = new TextDecoder();
      (async () => {
        for (;;) {
          const {done, value} = await reader.read();
          if (done) break;
          entry.text += decoder.decode(value, {stream: true});
        }
      })().catch(() => {});
    } catch (error) {}
    return response;
  };
})();
"""


def captured_responses(page) -> dict[str, str]:
    """'#n url' -> body of every fetch response the page has read so far (needs CAPTURE_RESPONSES_JS)."""
    entries = page.evaluate("window.__responses || []")
    return {f"response #{number} {entry['url']}": entry["text"] for number, entry in enumerate(entries)}
