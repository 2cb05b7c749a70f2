"""The loop the Chat feedback buttons start, end to end on a finished run: take N held-out questions the tuned run
gets wrong, correct each (its reference answer as the correction, as a visitor would type it, and a "both wrong"
vote), then "Train again with my corrections" both ways -- an SFT top-up and DPO -- through the app's own code
(tuning.feedback: store, convert, retrain_recipe) and the trainer's CLI. Prints, per method, how many of the N are
now right and the held-out key-fact rate before and after (all questions, and the ones not corrected).

    python bench/feedback_loop.py RUN_DIR [--questions 5] [--methods sft,dpo] [--keep DIR] [--set KEY=VALUE ...]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tuning.config import apply_settings, save_recipe
from tuning.feedback.retrain import retrain_recipe
from tuning.feedback.store import FeedbackItem, add_feedback
from tuning.runs.files import EVAL_FILE

REPO = Path(__file__).resolve().parents[1]


def wrong_questions(report: dict, count: int) -> list[dict]:
    """The first `count` scored questions whose tuned answer lacks its key facts (file order: no picking)."""
    wrong = [row for row in report["questions"] if row.get("key_facts") and not row["tuned_scores"]["key_fact"]]
    if len(wrong) < count:
        sys.exit(f"the run gets only {len(wrong)} held-out questions wrong; ask for fewer with --questions")
    return wrong[:count]


def key_facts(rows: list[dict], side: str, questions: set[str] | None = None) -> tuple[int, int]:
    """(right, asked) of the rows with key facts, optionally only those questions."""
    judged = [row for row in rows if row.get("key_facts") and (questions is None or row["question"] in questions)]
    return sum(bool(row[f"{side}_scores"]["key_fact"]) for row in judged), len(judged)


def train_child(parent: Path, workspace: Path, method: str, out: Path, settings: list[str]) -> tuple[dict, float]:
    chosen = {key: yaml.safe_load(value) for key, value in (setting.split("=", 1) for setting in settings)}
    recipe = apply_settings(retrain_recipe(parent, workspace, method), chosen)
    recipe.training.probes = ["forgetting"]  # did the corrections cost general skills; the scorecard is the point
    config = out.parent / f"{method}.yaml"
    save_recipe(recipe, config)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tuning", "train", "--config", str(config), "--output", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{method} run failed:\n{result.stderr[-3000:]}")
    return json.loads((out / EVAL_FILE).read_text(encoding="utf-8")), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--methods", default="sft,dpo")
    parser.add_argument("--keep", type=Path, help="train the children here (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], help="a recipe setting for the children, to try one")
    args = parser.parse_args()
    parent = args.run.resolve()
    report = json.loads((parent / EVAL_FILE).read_text(encoding="utf-8"))
    corrected = wrong_questions(report, args.questions)
    work = args.keep or Path(tempfile.mkdtemp())
    workspace = work / "workspace"
    for row in corrected:
        add_feedback(workspace, FeedbackItem(question=row["question"], base_answer=row["base"], tuned_answer=row["tuned"],
                                             run=parent.name, adapter=parent.name, settings=report["settings"],
                                             vote="both_wrong", correction=row["reference"]))
    asked = {row["question"] for row in corrected}
    rest = {row["question"] for row in report["questions"]} - asked
    print(f"parent {parent.name}: {len(corrected)} held-out questions it gets wrong, corrected:")
    for row in corrected:
        print(f"  - {row['question']}\n    tuned said: {row['tuned'][:90]!r}\n    corrected: {row['reference'][:90]!r}")
    before_all, before_rest = key_facts(report["questions"], "tuned"), key_facts(report["questions"], "tuned", rest)
    print(f"\n{'method':<6} {'corrected now right':>20} {'held-out key facts':>26} {'the other questions':>26} "
          f"{'minutes':>8}")
    print(f"{'parent':<6} {'0/' + str(len(corrected)):>20} {_rate(before_all):>26} {_rate(before_rest):>26}")
    for method in args.methods.split(","):
        child, seconds = train_child(parent, workspace, method, work / f"child-{method}", args.set)
        rows = child["questions"]
        fixed = key_facts(rows, "tuned", asked)
        forgetting = child.get("probes", {}).get("forgetting", {}).get("summary", "")
        print(f"{method:<6} {f'{fixed[0]}/{fixed[1]}':>20} {_rate(key_facts(rows, 'tuned')):>26} "
              f"{_rate(key_facts(rows, 'tuned', rest)):>26} {seconds / 60:>8.1f}   {forgetting}", flush=True)


def _rate(counts: tuple[int, int]) -> str:
    right, asked = counts
    return f"{right}/{asked} ({right / asked:.1%})" if asked else "-"


if __name__ == "__main__":
    main()
