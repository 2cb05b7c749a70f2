"""A real app server on 127.0.0.1 and a real headless Chromium driving it."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fake_hub import CANARY, FakeHub
from helpers import free_port

REPO = Path(__file__).resolve().parents[2]
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

    The Hub it talks to is the fake one (HF_ENDPOINT), online, with no token of its own (HF_HOME in tmp,
    HF_TOKEN unset): Publish must use the token the visitor pastes."""
    home = tmp_path_factory.mktemp("app-home")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update({"KANTELE_HOME": str(home), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": session_hub.url,
                "HF_HOME": str(home / "hf-home")})
    log = open(home / "server.log", "w")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("app did not start:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
    yield url, home
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
