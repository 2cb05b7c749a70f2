"""Every ready probe asked of the embedded model with real generation, a few questions each, through the same
score_run the CLI's `eval --probes` and the trainer's scorecard use."""

import json
import shutil
import subprocess
import sys

import pytest
from helpers import REPO, TINY_TRAIN, TINY_VALIDATION

from tuning.chat.probes.limits import KALEVALA_UNANSWERABLE_FILE
from tuning.chat.probes.run_probes import memorised_pairs, parse_probes
from tuning.chat.retrieval import KALEVALA_SOURCE, RetrievalIndex, with_passages
from tuning.chat.scorecard import format_summary, score_run
from tuning.chat.side_by_side import GenerationSettings
from tuning.config import ConfigError
from tuning.errors import UsageError


def as_examples(rows):
    return [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}],
             **({"key_facts": r["key_facts"]} if "key_facts" in r else {})} for r in rows]


def test_probes_run_on_the_embedded_model_and_land_in_eval_json(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    # Memorised asks the scorecard's own held-out questions (2 here); the shipped sets a sample of 2 each.
    report = score_run(run, max_questions=2, settings=GenerationSettings(max_new_tokens=12),
                       probes=("forgetting", "limits", "memorised"), probe_sample=2,
                       unanswerable_file=KALEVALA_UNANSWERABLE_FILE)
    probes = report["probes"]
    assert probes["forgetting"]["asked"] == 2 and probes["forgetting"]["summary"].startswith("general skills kept")
    for side in ("base", "tuned"):
        assert probes["limits"]["off_topic"][side]["asked"] == 2
        assert probes["limits"]["unanswerable"][side]["asked"] == 2
        for failure in probes["limits"]["unanswerable"][side]["failures"]:
            assert failure["rule"] == "invents" and failure["reply"]  # the rule that decided, and the reply
    assert probes["memorised"]["questions"] == 2 and 0 <= probes["memorised"]["as_trained"] <= 1
    assert json.loads((run / "eval.json").read_text())["probes"] == probes
    text = format_summary(report)
    assert "general skills kept" in text and "off-topic questions kept within limits" in text
    from tuning.hub.card import render_model_card

    card = render_model_card(run)
    assert "### Beyond the held-out questions" in card and probes["forgetting"]["summary"] in card


def test_unanswerable_is_skipped_with_the_fix_for_data_that_ships_none(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    # Data of another topic (the tiny run's questions are the Kalevala's own, whose unanswerable set applies).
    (run / "data" / "train.jsonl").write_text(json.dumps({"prompt": "How long do I boil an egg?",
                                                          "response": "About 7 minutes for a soft yolk."}) + "\n")
    report = score_run(run, max_questions=1, settings=GenerationSettings(max_new_tokens=8), probes=("limits",),
                       probe_sample=1)
    assert "--unanswerable FILE" in report["probes"]["limits"]["unanswerable"]["skipped"]


def test_memorised_pairs_match_held_out_facts_to_the_training_answer_holding_them():
    pairs = memorised_pairs(as_examples(TINY_VALIDATION), as_examples(TINY_TRAIN))
    assert pairs == [
        {"trained": "Who compiled the Kalevala?", "paraphrase": "Name the compiler of the Kalevala.",
         "key_facts": ["Lönnrot"]},
        {"trained": "Which smith forged the Sampo?", "paraphrase": "Who made the Sampo?", "key_facts": ["Ilmarinen"]}]


def test_probe_names_are_checked_before_any_model_loads():
    assert parse_probes("forgetting, limits,forgetting") == ("forgetting", "limits")
    with pytest.raises(ConfigError, match="no probe called nonsense -- use any of forgetting, limits"):
        parse_probes("nonsense")
    assert parse_probes("retrieval") == ("retrieval",)
    result = subprocess.run([sys.executable, "-m", "tuning", "eval", "--run", "runs/none", "--probes", "forgetful"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no probe called forgetful" in result.stderr


def test_bm25_finds_the_kalevala_passage_that_answers():
    index = RetrievalIndex.from_documents([KALEVALA_SOURCE])
    [found] = index.top(["Who forged the Sampo?"], k=3)
    assert 1 <= len(found) <= 3 and "Ilmarinen" in found[0].text
    assert found[0].source == "source.md" and found[0].end > found[0].start
    prompt = with_passages("Who compiled it?", found)
    assert prompt.startswith("Answer using these passages") and prompt.endswith("Question: Who compiled it?")
    assert "[1] " in prompt


def test_retrieval_without_source_documents_names_the_fix(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    (run / "data" / "train.jsonl").write_text(json.dumps({"prompt": "How long do I boil an egg?",
                                                          "response": "About 7 minutes for a soft yolk."}) + "\n")
    shutil.rmtree(run / "data" / "sources")  # the documents the trainer kept
    with pytest.raises(UsageError, match="give them with --sources FILE"):
        score_run(run, max_questions=1, settings=GenerationSettings(max_new_tokens=4), probes=("retrieval",))


def test_retrieval_columns_with_real_generation_on_the_kalevala_source(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    report = score_run(run, max_questions=2, settings=GenerationSettings(max_new_tokens=12), probes=("retrieval",),
                       sources=[KALEVALA_SOURCE])
    retrieval = report["probes"]["retrieval"]
    assert set(retrieval["key_fact"]) == {"base", "tuned", "base+retrieval", "tuned+retrieval"}
    assert retrieval["questions"] == 2 and retrieval["sources"] == ["source.md"]
    assert all(value > 0 for value in retrieval["seconds_per_question"].values())
    assert retrieval["examples"][0]["passages"][0]["source"] == "source.md"
    assert "retrieval (BM25, top 1" in format_summary(report)
