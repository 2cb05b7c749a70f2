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
