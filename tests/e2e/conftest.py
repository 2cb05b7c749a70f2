"""A real app server on 127.0.0.1 and a real headless Chromium driving it."""

from pathlib import Path

import pytest
from fake_hub import CANARY, FakeHub
from helpers import start_app_server, stop_process
from leak_checks import SERVER_TOKEN_CANARY

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def session_hub():
    """One fake Hub on 127.0.0.1 for the app under test (Publish pushes there), knowing the canary token."""
    with FakeHub() as hub:
        hub.add_token(CANARY, "alice", "write")
        yield hub


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, session_hub):
    """`python app.py` with its own runs/ and workspaces/ folder; yields (url, home).

    The Hub it talks to is the fake one (HF_ENDPOINT), online. The server's own HF_TOKEN is a second canary
    that the fake Hub doesn't know (HF_HOME in tmp, no saved login): Publish must use the token the visitor
    pastes, and neither token may show up anywhere. Gradio keeps its files in home/gradio (GRADIO_TEMP_DIR)."""
    home = tmp_path_factory.mktemp("app-home")
    try:
        server, url = start_app_server(home, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": session_hub.url,
                                              "HF_HOME": str(home / "hf-home"), "HF_TOKEN": SERVER_TOKEN_CANARY,
                                              "GRADIO_TEMP_DIR": str(home / "gradio")})
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url, home
    stop_process(server)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
