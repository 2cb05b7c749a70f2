"""The Kalevala example waiting at first visit: `python app.py` with the example on queues it at start, Chat shows
its progress within seconds of the first page load, and when it finishes the right pane answers with it -- with
no reload. (A short run stands in for the real recipe through KANTELE_EXAMPLE_RECIPE.)"""

import re

import pytest
from browser_helpers import screenshot
from helpers import FEW_STEPS, REPO, start_app_server, stop_process
from playwright.sync_api import expect
from test_app_flow import ANSWER_TIMEOUT_MS, TRAIN_TIMEOUT_MS, ask, assistant_messages, open_app, wait_until_answered

from tuning.config import apply_overrides, load_recipe, save_recipe


@pytest.fixture
def example_app(tmp_path):
    recipe = apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"),
                             [*FEW_STEPS, "training.max_steps=4", "training.scorecard_questions=4"])
    save_recipe(recipe, tmp_path / "short-example.yaml")
    home = tmp_path / "home"
    home.mkdir()
    try:
        server, url = start_app_server(home, {"KANTELE_EXAMPLE": "auto",
                                              "KANTELE_EXAMPLE_RECIPE": str(tmp_path / "short-example.yaml")})
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url, home
    stop_process(server)


def test_first_visit_finds_the_example_training_then_chats_with_it_without_a_reload(browser, example_app):
    url, home = example_app
    page = open_app(browser, url)
    page.evaluate("window.__sameDocument = true")  # a reload would lose it

    status = page.locator("#example-status")
    expect(status).to_contain_text("Kalevala example", timeout=30_000)
    expect(page.locator("#train-example")).to_be_hidden()
    # Before it is ready, a question gets the base answer and, on the right, where the example stands.
    ask(page, "Who compiled the Kalevala?")
    wait_until_answered(page, "base-pane")
    expect(assistant_messages(page, "tuned-pane").last).to_contain_text("Kalevala example",
                                                                        timeout=ANSWER_TIMEOUT_MS)
    screenshot(page, "chat-example-training")

    # It finishes: Chat selects it by itself, and the right pane answers with the adapter.
    # ("ready in about N minutes" is said while it trains: the picker switching is the sign it finished.)
    picker = page.locator("#adapter-picker input")
    expect(picker).to_have_value(re.compile("kalevala-example"), timeout=TRAIN_TIMEOUT_MS)
    expect(status).to_contain_text("ask a question below", timeout=30_000)
    expect(page.locator("#pane-note")).to_contain_text("LoRA adapter", timeout=ANSWER_TIMEOUT_MS)
    ask(page, "What is the Sampo?")
    wait_until_answered(page, "tuned-pane")
    tuned = assistant_messages(page, "tuned-pane").last.inner_text()
    assert tuned.strip() and "No adapter" not in tuned and "Kalevala example" not in tuned
    assert page.evaluate("window.__sameDocument") is True
    [run] = [p for p in (home / "runs").iterdir() if p.is_dir()]
    assert (run / "example.json").is_file() and not (run / "owner.sha256").exists()
