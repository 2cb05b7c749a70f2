"""Is the scorecard cheap? Base + tuned on N held-out questions (batched) vs one model answering them one by one.

Target (issue 4): the scorecard takes at most ~2x the time of answering the questions with one
model, one at a time -- i.e. batching must pay for the second model. Measured in one process,
side by side, on the same loaded model. Prints the ratio last.

    python bench/scorecard_batching.py [RUN_DIR] [N]
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tuning.chat.scorecard import score_run
from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
from tuning.data.examples import load_examples, user_prompts, write_jsonl
from tuning.quiet import quiet_library_noise
from tuning.runs.files import ADAPTER_DIR, CONFIG_FILE, RUN_DATA_DIR, RUN_VALIDATION_FILE


def copy_run(run_dir: Path, scratch: Path) -> Path:
    """The parts of a run the scorecard reads, so the bench never overwrites the run's own eval.json."""
    copy = scratch / "run"
    copy.mkdir(parents=True)
    for name in (CONFIG_FILE, ADAPTER_DIR, RUN_DATA_DIR):
        source = run_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / name)
    return copy


def main(run_dir: Path, count: int) -> None:
    quiet_library_noise()
    scratch = Path(tempfile.mkdtemp())
    run_dir = copy_run(run_dir, scratch)
    chat = SideBySideChat.from_run(run_dir)
    examples = load_examples(run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE).examples[:count]
    questions = user_prompts(examples)
    settings = GenerationSettings()  # greedy, 128 new tokens: what the scorecard uses
    chat.answer(questions[0], adapter_on=True, settings=GenerationSettings(max_new_tokens=4))  # warm-up

    started = time.perf_counter()
    for question in questions:
        chat.answer(question, adapter_on=True, settings=settings)
    one_by_one = time.perf_counter() - started

    data = scratch / "questions.jsonl"
    write_jsonl(examples, data)
    started = time.perf_counter()
    report = score_run(run_dir, data, settings=settings, chat=chat)
    scorecard = time.perf_counter() - started
    shutil.rmtree(scratch)

    print(json.dumps({"questions": len(questions), "one_model_one_by_one_s": round(one_by_one, 1),
                      "scorecard_both_models_batched_s": round(scorecard, 1),
                      "tuned_key_fact": report["summary"]["metrics"].get("key_fact")}, indent=2))
    print(f"scorecard / one model one-by-one = {scorecard / one_by_one:.2f}  (target <= 2.0)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/kalevala-cpu"), int(sys.argv[2]) if len(sys.argv) > 2 else 40)
