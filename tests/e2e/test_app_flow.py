"""The Kalevala flow in a real browser: load data -> train a few steps -> both panes answer -> publish view,
then the secrets sweep: the canary token, used through every flow, shows up nowhere."""

import re
import signal

from browser_helpers import CAPTURE_RESPONSES_JS, captured_responses, screenshot
from fake_hub import CANARY
from fake_openai import FakeOpenAI
from leak_checks import SERVER_TOKEN_CANARY, files_under, find_secrets
from playwright.sync_api import expect

from tuning.runs.files import read_status
from ui.generate_panel import OPENAI_CHOICE
from ui.publish_tab import INCLUDE_DATASET

TRAIN_TIMEOUT_MS = 600_000  # a 4-step run plus its 8-question scorecard, niced beside other tests; CI is slow
SCORECARD_SAMPLE = 4  # of the 58 held-out questions (and of each probe's): the full scorecard is for real runs
ANSWER_TIMEOUT_MS = 180_000


def open_app(browser, url, capture: bool = False):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    if capture:
        page.add_init_script(CAPTURE_RESPONSES_JS)
    page.goto(url, wait_until="domcontentloaded")
    expect(page.get_by_role("tab", name="Chat")).to_be_visible(timeout=60_000)
    return page


def load_kalevala(page):
    page.get_by_role("tab", name="Data").click()
    page.locator("#load-kalevala").click()
    expect(page.locator("#data-stats")).to_contain_text("conversations", timeout=120_000)


def start_short_training(page, steps: int):
    page.get_by_role("tab", name="Train").click()
    # The page's load fills the knobs from the preset (max steps -1): typing before that lands would be overwritten.
    expect(page.locator("#max-steps input")).to_have_value("-1", timeout=60_000)
    for knob, value in (("#max-steps", steps), ("#scorecard-questions", SCORECARD_SAMPLE)):
        box = page.locator(f"{knob} input")
        box.fill(str(value))
        box.press("Tab")
    page.locator("#start-training").click()
    expect(page.locator("#train-progress")).to_contain_text("step", timeout=120_000)


def ask(page, question: str):
    page.locator("#chat-input textarea").fill(question)
    page.locator("#ask-both").click()


def wait_until_answered(page, pane: str, timeout_s: float = 180):
    """Wait for a pane's last answer to appear and stop growing (streaming has ended)."""
    import time

    messages = assistant_messages(page, pane)
    expect(messages.last).not_to_be_empty(timeout=int(timeout_s * 1000))
    deadline, previous = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        text = messages.last.inner_text()
        if text and text == previous:
            return text
        previous = text
        page.wait_for_timeout(1500)
    return previous


def assistant_messages(page, pane: str):
    return page.locator(f"#{pane} .message.bot, #{pane} [data-testid='bot']")


def test_kalevala_flow_end_to_end(browser, app_server, session_hub):
    url, home = app_server
    page = open_app(browser, url, capture=True)

    load_kalevala(page)
    expect(page.locator("#data-preview")).to_contain_text("Lönnrot")
    screenshot(page, "data")

    start_short_training(page, steps=4)
    expect(page.locator("#train-progress")).to_contain_text("Finished", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#loss-plot")).to_be_visible()
    expect(page.locator("#estimate")).to_contain_text("trainable parameters")
    expect(page.locator("#scorecard-summary")).to_contain_text(
        f"Scorecard: {SCORECARD_SAMPLE} of 58 held-out questions", timeout=60_000)
    expect(page.locator("#scorecard-summary")).to_contain_text("key fact")
    # The preset's probes, each a sample of SCORECARD_SAMPLE (the quick mode): the next three questions answered under it.
    for line in ("Beyond the held-out questions", "general skills kept", "off-topic questions kept within limits",
                 "retrieval (BM25, top 1", "key facts asked as trained"):
        expect(page.locator("#scorecard-summary")).to_contain_text(line)
    expect(page.locator("#scorecard-table")).to_contain_text("Lönnrot")
    screenshot(page, "train")

    # A scorecard row opens its question in Chat.
    first_question = "In which northern town did the Kalevala's compiler practise medicine?"  # the seeded sample's first
    page.locator("#scorecard-table [data-testid='cell-0-1']").click()
    expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true", timeout=30_000)
    expect(page.locator("#chat-input textarea")).to_have_value(first_question)
    page.get_by_role("tab", name="Train").click()

    # A reload re-attaches to this browser's run (its id lives in the browser's storage).
    page.reload(wait_until="domcontentloaded")
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-progress")).to_contain_text("Finished", timeout=30_000)

    page.locator("#compare-in-chat").click()
    expect(page.locator("#pane-note")).to_contain_text("adapter", timeout=60_000)
    ask(page, "Who compiled the Kalevala?")
    wait_until_answered(page, "base-pane")
    wait_until_answered(page, "tuned-pane")
    expect(page.locator("#tuned-pane")).not_to_contain_text("No adapter selected")
    screenshot(page, "chat")

    publish_to_the_fake_hub(page, session_hub, home)
    chat_with_a_private_hub_adapter(page)
    generate_with_a_remote_backend(page)
    learn_from_the_chat(page)
    no_secret_anywhere(page, home)
    page.close()


def publish_to_the_fake_hub(page, hub, home):
    """Dry run shows the files and card; a wrong token gets a clear refusal; the right one pushes exactly the
    listed files, with a link; the token never comes back to the page or into the server's log."""
    page.get_by_role("tab", name="Publish").click()
    expect(page.locator("#publish-files")).to_contain_text("adapter_model.safetensors", timeout=30_000)
    expect(page.locator("#model-card")).to_contain_text("How to use")
    page.locator("#publish-repo textarea, #publish-repo input").first.fill("alice/kalevala-e2e")
    page.locator("#publish-repo textarea, #publish-repo input").first.press("Tab")
    page.get_by_label(INCLUDE_DATASET).check()
    expect(page.locator("#publish-files")).to_contain_text("data/train.jsonl", timeout=30_000)
    expect(page.locator("#publish-dataset-repo textarea, #publish-dataset-repo input").first).to_have_value(
        "alice/kalevala-e2e-data")

    token_box = page.locator("#publish-token input")
    token_box.fill("hf_NotARealToken000000000000000000")
    page.locator("#push-button").click()
    expect(page.locator("#push-result")).to_contain_text("refused the token (401)", timeout=60_000)
    assert hub.repos == {}

    token_box.fill(CANARY)
    page.locator("#push-button").click()
    expect(page.locator("#push-result")).to_contain_text("Pushed", timeout=120_000)
    expect(page.locator("#push-result a").first).to_have_attribute("href", f"{hub.url}/alice/kalevala-e2e")
    model, dataset = hub.repo("alice/kalevala-e2e"), hub.repo("alice/kalevala-e2e-data", "dataset")
    listed = page.locator("#publish-files").inner_text()
    for name in [*model.files, *dataset.files]:
        assert name in listed
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(model.files)
    assert model.private and dataset.private  # the tab's default
    assert "datasets:\n- alice/kalevala-e2e-data" in model.files["README.md"].decode()
    screenshot(page, "publish")
    assert CANARY not in page.content()
    assert CANARY not in (home / "server.log").read_text()


def chat_with_a_private_hub_adapter(page):
    """The adapter just pushed is private; asking for it by id goes to the (fake) Hub with the server's own
    token -- the second canary -- and comes back refused, the refusal naming no token."""
    page.get_by_role("tab", name="Chat").click()
    hub_box = page.locator("#hub-adapter textarea, #hub-adapter input").first
    hub_box.fill("alice/kalevala-e2e")
    hub_box.press("Enter")
    expect(page.locator("#pane-note")).to_contain_text(re.compile("not an adapter on the Hub|can't download"),
                                                       timeout=60_000)
    hub_box.fill("")


def generate_with_a_remote_backend(page):
    """Generate pairs with an OpenAI-compatible endpoint whose API key is the canary. The endpoint echoes the
    key in its first reply's error (as careless servers do); the batch is retried and its pairs arrive."""
    from test_generate_flow import fill, lonnrot_section

    with FakeOpenAI(CANARY, echo_key_in_errors=1) as endpoint:
        page.get_by_role("tab", name="Data").click()
        page.get_by_text("Generate pairs from documents").click()
        page.get_by_label(OPENAI_CHOICE).check()
        fill(page, "#generate-base-url textarea", endpoint.url)
        fill(page, "#generate-model textarea", "fake-qa")
        fill(page, "#generate-key input", CANARY)
        fill(page, "#generate-text textarea", lonnrot_section())
        fill(page, "#generate-batches input", "1")
        page.locator("#generate-start").click()
        progress = page.locator("#generate-progress")
        expect(progress).to_contain_text("Done", timeout=120_000)
        expect(progress).to_contain_text("kept of")
    assert len(endpoint.authorizations) >= 2, "the echoed error was retried"
    assert set(endpoint.authorizations) == {f"Bearer {CANARY}"}, "the key typed in is the one the endpoint got"
    screenshot(page, "generate-remote")


def learn_from_the_chat(page):
    """Vote for the tuned pane and correct its answer; both show in the Data tab's Feedback panel; "Train again with
    my corrections" (an SFT top-up of the run just trained) finishes, is scored against its parent, and answers in
    Chat."""
    question, corrected = "Who compiled the Kalevala?", "Elias Lönnrot compiled the Kalevala from folk poems."
    page.get_by_role("tab", name="Chat").click()
    page.locator("#clear-chat").click()  # the picker still holds the run trained above
    # Clear also empties the question box: ask only once it has landed, or it may empty the question typed after it.
    expect(assistant_messages(page, "base-pane")).to_have_count(0, timeout=30_000)
    ask(page, question)
    wait_until_answered(page, "base-pane")
    tuned_answer = wait_until_answered(page, "tuned-pane")
    page.locator("#vote-right").click()
    expect(page.locator("#feedback-status")).to_contain_text("vote saved", timeout=30_000)
    page.locator("#correct-answer").click()
    box = page.locator("#correction-text textarea")
    expect(box).to_have_value(tuned_answer.strip(), timeout=30_000)  # seeded with the tuned answer, to edit
    box.fill(corrected)
    page.locator("#save-correction").click()
    expect(page.locator("#feedback-status")).to_contain_text("1 correction", timeout=30_000)

    page.get_by_role("tab", name="Data").click()
    listed = page.locator("#feedback-list")
    for text in (question, corrected, "right"):
        expect(listed).to_contain_text(text, timeout=30_000)
    expect(page.locator("#feedback-download")).to_be_visible()
    screenshot(page, "feedback")

    page.get_by_role("tab", name="Train").click()
    page.locator("#retrain-panel").get_by_text("Train again with my corrections").first.click()
    expect(page.locator("#retrain-summary")).to_contain_text("1 correction", timeout=30_000)
    page.locator("#retrain-start").click()
    expect(page.locator("#train-progress")).to_contain_text("sft-on-", timeout=60_000)
    expect(page.locator("#train-progress")).to_contain_text(re.compile("Finished.*sft-on-"), timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#scorecard-summary")).to_contain_text("Against the run it continued", timeout=120_000)
    screenshot(page, "train-again")
    page.locator("#compare-in-chat").click()
    expect(page.locator("#adapter-picker input")).to_have_value(re.compile("sft-on-"), timeout=60_000)
    ask(page, question)
    assert wait_until_answered(page, "tuned-pane").strip()


def no_secret_anywhere(page, home):
    """Both canaries -- the token typed into Publish and the generator's key field, and the server's own
    HF_TOKEN -- in no file of the app's home (runs, workspaces, gradio's files, the server log), not in the
    page, and not in any response the page received (raw, hex, url-encoded or base64 at any alignment)."""
    files = files_under(home)
    responses = captured_responses(page)
    assert any("Pushed" in text for text in responses.values()), "the responses were captured"
    hits = find_secrets([CANARY, SERVER_TOKEN_CANARY], files, {"page HTML": page.content(), **responses})
    assert hits == [], f"secrets found in {len(hits)} places (of {len(files)} files, {len(responses)} responses)"


def test_second_visitor_chats_while_first_trains_and_a_killed_run_is_reported(browser, app_server):
    url, home = app_server
    trainer, visitor = open_app(browser, url), open_app(browser, url)

    load_kalevala(trainer)
    start_short_training(trainer, steps=200)
    expect(trainer.locator("#train-progress")).to_contain_text("Training", timeout=120_000)
    expect(trainer.locator("#train-progress")).to_contain_text("step 1/", timeout=120_000)

    visitor.get_by_role("tab", name="Train").click()
    expect(visitor.locator("#train-progress")).to_contain_text("Training now on this app", timeout=30_000)
    visitor.get_by_role("tab", name="Chat").click()
    ask(visitor, "What is the Sampo?")
    expect(assistant_messages(visitor, "base-pane").first).not_to_be_empty(timeout=ANSWER_TIMEOUT_MS)

    # Kill the trainer outright: the page says it failed, and the app keeps answering.
    running = [d for d in (home / "runs").iterdir() if read_status(d).get("state") == "running"]
    assert len(running) == 1
    import os

    os.kill(read_status(running[0])["pid"], signal.SIGKILL)
    expect(trainer.locator("#train-progress")).to_contain_text("Failed", timeout=60_000)
    expect(trainer.locator("#train-progress")).to_contain_text("signal 9")
    screenshot(trainer, "train-killed")
    ask(visitor, "Who is Väinämöinen?")
    expect(assistant_messages(visitor, "base-pane").nth(1)).not_to_be_empty(timeout=ANSWER_TIMEOUT_MS)
    trainer.close()
    visitor.close()
