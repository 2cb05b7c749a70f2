"""Isolation in the app: every handler that takes a run id from the client asks the engine whose run it is.

The run id lives in the browser (and the dropdowns are filled by the server), but a client can send any
id to any handler; these tests send another visitor's id straight to the handlers."""

import ast
import shutil

import gradio as gr
import pytest
from helpers import REPO

from tuning.runs.owner import Owner, new_visitor_id, record_owner
from tuning.runs.queue import TrainingQueue
from tuning.runs.visitor_runs import VisitorRuns
from ui import chat_tab, publish_tab, scorecard, train_tab
from ui.visitor import identify

RUN_ID = "20250101-000000-alices-run-abcdef"


@pytest.fixture
def alices_run(tmp_path, monkeypatch, trained_run):
    """A finished run of alice's in a fresh queue that every tab uses; returns (alice, bob)."""
    queue = TrainingQueue(tmp_path / "runs")
    shutil.copytree(trained_run, queue.runs_dir / RUN_ID)
    alice, bob = Owner(new_visitor_id()), Owner(new_visitor_id())
    record_owner(queue.runs_dir / RUN_ID, alice)
    for module in (chat_tab, publish_tab, scorecard, train_tab):
        monkeypatch.setattr(module, "RUNS", VisitorRuns(queue))
    return alice, bob


def test_the_run_lists_show_a_visitor_only_their_runs(alices_run):
    alice, bob = alices_run
    assert chat_tab.RUNS.finished(alice) == [RUN_ID]
    assert chat_tab.RUNS.finished(bob) == []
    assert RUN_ID not in chat_tab.adapter_choices(bob, RUN_ID)["choices"]
    assert publish_tab.refresh_runs(bob, RUN_ID)["value"] is None


def test_another_visitors_run_id_is_refused_by_every_handler(alices_run):
    alice, bob = alices_run
    rows, card = publish_tab.show_plan(alice, RUN_ID, "alice/a", [], "")
    assert rows and "How to use" in card  # the owner gets the plan...

    refusals = {  # ...bob, sending the same id, gets nothing of it
        "chat pane note": chat_tab.describe_panes(bob, RUN_ID),
        "publish dry run": publish_tab.show_plan(bob, RUN_ID, "bob/a", [], "")[1],
        "push": publish_tab.push(bob, RUN_ID, "bob/a", True, [], "", "hf_x", None),
        "export": publish_tab.export_for_ollama(bob, RUN_ID, progress=lambda *a, **k: None)[0],
        "progress": train_tab.poll_run(RUN_ID, bob)[0],
        "stop": train_tab.stop_training(RUN_ID, bob),
    }
    for where, text in refusals.items():
        assert "no run of yours" in text, where
    assert scorecard.read_scorecard(RUN_ID, bob) is None
    assert scorecard.filter_rows(RUN_ID, bob, scorecard.ALL_VERDICTS) == []
    with pytest.raises(gr.Error, match="no run of yours"):
        next(chat_tab.ask_both("Who?", [], [], bob, RUN_ID, "", 16, True, 0.7, 50, 1.0, 1.0))
    assert train_tab.poll_run(RUN_ID, bob)[1] is None  # no curves either


def test_a_page_that_has_not_identified_itself_starts_nothing(alices_run):
    message = train_tab.start_training({"train_file": "x"}, None)[1]
    assert "reload the page" in message


def test_identify_keeps_a_real_visitor_id_and_replaces_a_forged_one():
    kept = new_visitor_id()
    assert identify(kept, None) == (kept, Owner(kept))
    made, owner = identify("short", None)
    assert made != "short" and owner == Owner(made)
    profile = gr.OAuthProfile({"name": "Alice", "preferred_username": "alice", "profile": "", "picture": ""})
    assert identify(kept, profile)[1] == Owner(kept, hf_user="alice")


def test_the_ui_never_opens_a_run_folder_without_the_ownership_check():
    """The UI reaches runs only through ui.state.RUNS (VisitorRuns), whose every method takes the asker: no UI
    module names the queue, the runs folder, or a run-file name of its own."""
    import inspect

    from tuning.runs.visitor_runs import VisitorRuns

    for name, method in inspect.getmembers(VisitorRuns, inspect.isfunction):
        if not name.startswith("_") and name not in VisitorRuns.MACHINE_WIDE:
            assert "asker" in inspect.signature(method).parameters, f"VisitorRuns.{name} doesn't take the asker"
            assert inspect.signature(method).parameters["asker"].default is inspect.Parameter.empty, name
    offenders = []
    for path in [REPO / "app.py", *(REPO / "ui").glob("*.py")]:
        if path.name == "state.py":  # where the one queue is made, and handed to RUNS
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id in ("QUEUE", "TrainingQueue", "RUNS_DIR"):
                offenders.append(f"{path.name}:{node.lineno} {node.id}")
            if isinstance(node, ast.Attribute) and node.attr in ("runs_dir", "run_dir", "owned_run_dir", "list_runs"):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module in ("tuning.runs.files", "tuning.runs.queue"):
                offenders += [f"{path.name}:{node.lineno} {alias.name}" for alias in node.names  # run states are fine
                              if node.module.endswith("queue") or alias.name.endswith(("_FILE", "_DIR"))]
    assert offenders == []


def test_every_event_that_takes_a_run_id_also_takes_the_server_side_owner():
    from app import build_app

    demo = build_app()
    owner_states = {id(fn.outputs[1]) for fn in demo.fns.values() if fn.fn is identify}
    assert len(owner_states) == 1
    run_inputs = {"adapter-picker", "publish-run"}
    missing = []
    for fn in demo.fns.values():
        takes_run = any(getattr(block, "elem_id", None) in run_inputs or
                        getattr(block, "storage_key", None) == "kantele-run" for block in fn.inputs)
        if takes_run and not any(id(block) in owner_states for block in fn.inputs):
            missing.append(getattr(fn.fn, "__name__", repr(fn.fn)))
    assert missing == []
