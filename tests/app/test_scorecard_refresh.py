"""The Train tab's scorecard re-renders when eval.json changes, not only when a run first has one: a child run's
eval.json is written twice (the scorecard, then the "parent" block), and the page must show the second."""

import shutil

from tuning.runs.files import EVAL_FILE, read_json, write_json


def test_a_parent_block_written_after_the_scorecard_is_shown_too(trained_run, tmp_path, monkeypatch):
    import gradio as gr

    from tuning.runs.owner import Owner, new_visitor_id, record_owner
    from tuning.runs.queue import TrainingQueue
    from tuning.runs.visitor_runs import VisitorRuns
    from ui import scorecard

    run_id = "20250101-000000-child-cccccc"
    run_dir = tmp_path / "runs" / run_id
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    owner = Owner(new_visitor_id())
    record_owner(run_dir, owner)
    monkeypatch.setattr(scorecard, "RUNS", VisitorRuns(TrainingQueue(tmp_path / "runs")))

    first = scorecard.refresh_scorecard(run_id, owner, None, scorecard.ALL_VERDICTS)
    shown = first[0]
    assert shown.startswith(run_id) and "Against the run it continued" not in first[1]["value"]
    again = scorecard.refresh_scorecard(run_id, owner, shown, scorecard.ALL_VERDICTS)
    assert all(isinstance(output, type(gr.skip())) for output in again)  # nothing new: nothing re-rendered

    report = read_json(run_dir / EVAL_FILE)
    report["parent"] = {"run": "the-parent", "key_fact": {"parent": 0.25, "tuned": 0.5},
                        "changes": {"learned": 1, "regressed": 0}}
    write_json(run_dir / EVAL_FILE, report)
    later = scorecard.refresh_scorecard(run_id, owner, shown, scorecard.ALL_VERDICTS)
    assert later[0] != shown and "Against the run it continued" in later[1]["value"]
