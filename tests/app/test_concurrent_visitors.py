"""Five visitors chat at once while a sixth trains and a seventh queues, through the real app's HTTP API:
every one is answered, and nobody's history, dataset or run shows up in another's session."""

import shutil

import pytest
from helpers import start_app_server, stop_process
from visitors import Visitor, chat_concurrently, cross_talk

CHATTERS = 5
SHORT_ANSWER = 16  # tokens, the slider's minimum: the point is who gets answered, not what
LONG_RUN_STEPS = 400  # outlasts the chats; stopped at the end


@pytest.fixture(scope="module")
def app(tmp_path_factory, trained_run):
    home = tmp_path_factory.mktemp("visitors-home")
    shutil.copytree(trained_run, home / "runs" / trained_run.name)  # a finished run from the shell: open to all
    server, url = start_app_server(home, {"HF_HUB_OFFLINE": "1"})
    yield url, trained_run.name
    stop_process(server)


def test_chatters_trainer_and_queuer_are_all_served_without_cross_talk(app):
    url, run_id = app
    trainer, queuer = Visitor(url, "trainer"), Visitor(url, "queuer")
    chatters = [Visitor(url, f"chatter {n}") for n in range(1, CHATTERS + 1)]
    try:
        assert "Submitted run" in trainer.start_training(LONG_RUN_STEPS)
        assert "Submitted run" in queuer.start_training(LONG_RUN_STEPS)
        assert "Queued" in queuer.progress() and "position 1" in queuer.progress()

        results = chat_concurrently(chatters, run_id, SHORT_ANSWER)
        assert cross_talk(results) == []
        assert "Training" in trainer.progress()  # the run kept going while everyone chatted
        # A chatter sees neither run: they belong to the trainer's and the queuer's sessions.
        seen_by_chatter = chatters[0].progress()
        assert "another visitor's run" in seen_by_chatter
        assert trainer.run_id not in seen_by_chatter and queuer.run_id not in seen_by_chatter
        # Nor their dataset: a chatter who loaded nothing has nothing to train on.
        assert "load a dataset first" in chatters[1].start_training(LONG_RUN_STEPS, load_example=False)
    finally:
        queuer.stop()
        trainer.stop()
