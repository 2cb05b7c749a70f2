"""Base vs tuned on held-out questions: key facts, exact match, token F1, ROUGE-L, BLEU, a verdict each."""

from __future__ import annotations

import csv
import functools
import io
import random
import re
import string
import time
import unicodedata
from collections import Counter
from pathlib import Path

from tuning.config import write_text_atomic
from tuning.data.examples import load_examples, reference_answers, user_prompts
from tuning.errors import UsageError
from tuning.runs.files import (
    EVAL_CSV_FILE,
    EVAL_FILE,
    RUN_DATA_DIR,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
    write_json,
)

METRICS = ("key_fact", "exact_match", "token_f1", "rouge_l", "bleu")
MIN_ANSWER_TOKENS = 32  # room for a one-sentence answer even when every reference is a single word
MAX_ANSWER_TOKENS = 128  # the chat's default answer length
LEARNED, REGRESSED, UNCHANGED_RIGHT, UNCHANGED_WRONG = "learned", "regressed", "unchanged-right", "unchanged-wrong"
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def fold(text: str) -> str:
    """Casefold and strip accents, so 'Lonnrot' matches 'Lönnrot'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: folded, no punctuation or articles, single spaces."""
    text = fold(text)
    text = "".join(" " if c in string.punctuation else c for c in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def has_key_facts(answer: str, key_facts: list[str]) -> bool | None:
    """True when the answer contains every key fact (folded substring); None when there are none."""
    if not key_facts:
        return None
    folded = " ".join(fold(answer).split())
    return all(" ".join(fold(fact).split()) in folded for fact in key_facts)


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the normalized answer equals the normalized reference."""
    return float(normalize_answer(answer) == normalize_answer(reference))


def token_f1(answer: str, reference: str) -> float:
    """Harmonic mean of token precision and recall against the reference (SQuAD F1)."""
    predicted, gold = normalize_answer(answer).split(), normalize_answer(reference).split()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if not predicted or not gold or common == 0:
        return float(predicted == gold)
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge_score)."""
    return _rouge_scorer().score(reference, answer)["rougeL"].fmeasure


def bleu(answer: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu), scaled 0-1 like the others."""
    import sacrebleu

    return sacrebleu.sentence_bleu(answer, [reference]).score / 100.0


def score_answer(answer: str, reference: str, key_facts: list[str]) -> dict:
    """Every metric of one answer against its reference."""
    return {
        "key_fact": has_key_facts(answer, key_facts),
        "exact_match": exact_match(answer, reference),
        "token_f1": round(token_f1(answer, reference), 4),
        "rouge_l": round(rouge_l(answer, reference), 4),
        "bleu": round(bleu(answer, reference), 4),
    }


def is_correct(scores: dict) -> bool:
    """Right = contains the key facts (or, without key facts, token F1 >= 0.5)."""
    if scores["key_fact"] is not None:
        return bool(scores["key_fact"])
    return scores["token_f1"] >= 0.5


def verdict(base_scores: dict, tuned_scores: dict) -> str:
    """learned / regressed / unchanged-right / unchanged-wrong, from base to tuned."""
    before, after = is_correct(base_scores), is_correct(tuned_scores)
    if after and not before:
        return LEARNED
    if before and not after:
        return REGRESSED
    return UNCHANGED_RIGHT if after else UNCHANGED_WRONG


def summarize(rows: list[dict]) -> dict:
    """Mean of every metric for base and tuned, the delta, and the verdict counts."""
    totals = {}
    for metric in METRICS:
        base = [r["base_scores"][metric] for r in rows if r["base_scores"][metric] is not None]
        tuned = [r["tuned_scores"][metric] for r in rows if r["tuned_scores"][metric] is not None]
        if not base:
            continue
        mean_base, mean_tuned = sum(map(float, base)) / len(base), sum(map(float, tuned)) / len(tuned)
        totals[metric] = {"base": round(mean_base, 4), "tuned": round(mean_tuned, 4),
                          "delta": round(mean_tuned - mean_base, 4)}
    verdicts = Counter(r["verdict"] for r in rows)
    return {"questions": len(rows), "metrics": totals,
            "verdicts": {v: verdicts.get(v, 0) for v in (LEARNED, REGRESSED, UNCHANGED_RIGHT, UNCHANGED_WRONG)}}


def answer_budget(tokenizer, references: list[str]) -> int:
    """New tokens the scorecard lets each answer run to: twice the longest reference, within bounds.

    An untuned model rambles to whatever limit it is given, and every batch runs until its longest
    row ends: with 128 tokens a Kalevala scorecard took 2 min on the CPU, most of it text past any
    reference's length that the scores can't reward."""
    longest = max((len(tokenizer(reference, add_special_tokens=False).input_ids) for reference in references),
                  default=0)
    return min(MAX_ANSWER_TOKENS, max(MIN_ANSWER_TOKENS, 2 * longest))


def sample_examples(examples: list[dict], limit: int, seed: int) -> list[dict]:
    """At most `limit` examples (0: all), a seeded sample kept in file order so reruns score the same ones."""
    if limit <= 0 or limit >= len(examples):
        return examples
    picked = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[index] for index in picked]


def questions_phrase(summary: dict) -> str:
    """'58 held-out questions', or '8 of 58 held-out questions' for a sampled scorecard."""
    from tuning.runs.run import questions_phrase as phrase

    return phrase(summary["questions"], summary.get("held_out", summary["questions"]))


# With probes, the scorecard's own two passes join the probes' (tuning/chat/probes/run_probes.answer_in_lanes) in
# batches of 32: the Kalevala scorecard with every probe took 103 s vs 120-137 s in batches of 8, the same 58 key-fact
# verdicts (AMD EPYC, 2 cores; bench/scorecard_probes.py). Alone it keeps its measured batches of 8 and strategy.
LANE_BATCH = 32


def score_run(run_dir: str | Path, data_file: str | Path | None = None, settings=None, chat=None,
              max_questions: int = 0, seed: int = 42, probes: tuple[str, ...] = (), probe_sample: int = 0,
              unanswerable_file: str | Path | None = None, sources: list | None = None) -> dict:
    """Answer the held-out questions (all, or a seeded sample of max_questions) with and without the adapter,
    score both, ask the probes named (tuning/chat/probes), write RUN_DIR/eval.json."""
    from tuning.chat.side_by_side import GenerationSettings, SideBySideChat, describe_settings

    run_dir = Path(run_dir)
    data_file = Path(data_file) if data_file else run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE
    held_out = load_examples(data_file).examples
    if not held_out:
        raise UsageError(f"{data_file}: no questions to evaluate")
    examples = sample_examples(held_out, max_questions, seed)
    chat = chat or SideBySideChat.from_run(run_dir, dequantize=False)
    references = reference_answers(examples)
    settings = settings or GenerationSettings(max_new_tokens=answer_budget(chat.tokenizer, references))
    questions = user_prompts(examples)
    plan = None
    if probes:  # planned first: a probe that can't run says so before anything is generated
        from tuning.chat.probes.run_probes import plan_probes
        from tuning.chat.retrieval import run_sources

        plan = plan_probes(probes, run_dir / RUN_DATA_DIR / RUN_TRAIN_FILE, examples, settings, sample=probe_sample,
                           seed=seed, unanswerable_file=unanswerable_file, sources=sources or run_sources(run_dir),
                           answered=set(questions))
    started = time.perf_counter()
    if plan is None:
        base_answers, tuned_answers = chat.answer_both_many(questions, settings=settings)
        seconds_per_answer = (time.perf_counter() - started) / len(questions)
    else:  # the scorecard's passes first on each side, then the probes', all in one go (answer_in_lanes)
        from tuning.chat.probes.run_probes import answer_in_lanes, both_sides_seconds
        from tuning.chat.side_by_side import Pass

        done = answer_in_lanes(chat, {"scorecard base": Pass(questions, False, settings, LANE_BATCH),
                                      "scorecard tuned": Pass(questions, True, settings, LANE_BATCH), **plan.passes})
        base_answers, tuned_answers = done["scorecard base"].answers, done["scorecard tuned"].answers
        seconds_per_answer = both_sides_seconds(done["scorecard base"], done["scorecard tuned"]) / len(questions)
    rows = []
    for example, question, reference, base, tuned in zip(
        examples, questions, references, base_answers, tuned_answers
    ):
        facts = list(example.get("key_facts") or [])
        base_scores, tuned_scores = score_answer(base, reference, facts), score_answer(tuned, reference, facts)
        rows.append({"question": question, "reference": reference, "key_facts": facts, "base": base,
                     "tuned": tuned, "base_scores": base_scores, "tuned_scores": tuned_scores,
                     "verdict": verdict(base_scores, tuned_scores)})
    report = {"data_file": str(data_file), "base_model": chat.base_name, "settings": describe_settings(settings),
              "summary": {**summarize(rows), "held_out": len(held_out)}, "questions": rows}
    if plan is not None:
        from tuning.chat.probes.run_probes import probe_reports

        report["probes"] = probe_reports(plan, done, dict(zip(questions, zip(base_answers, tuned_answers))),
                                         seconds_per_answer)
    write_json(run_dir / EVAL_FILE, report)
    write_text_atomic(run_dir / EVAL_CSV_FILE, format_csv(rows))
    return report


def format_csv(rows: list[dict]) -> str:
    """The per-question scorecard as CSV text (one row per question, for spreadsheets)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "reference", "key_facts", "base", "tuned", "verdict",
                     *[f"base_{m}" for m in METRICS], *[f"tuned_{m}" for m in METRICS]])
    for row in rows:
        writer.writerow([row["question"], row["reference"], "; ".join(row["key_facts"]), row["base"], row["tuned"],
                         row["verdict"], *[row["base_scores"][m] for m in METRICS],
                         *[row["tuned_scores"][m] for m in METRICS]])
    return out.getvalue()


def format_summary(report: dict) -> str:
    """A plain-text table of base vs tuned per metric, plus the verdict counts."""
    summary = report["summary"]
    lines = [f"{questions_phrase(summary)} ({report['data_file']})",
             f"{'metric':<12} {'base':>8} {'tuned':>8} {'delta':>8}"]
    for metric, values in summary["metrics"].items():
        lines.append(f"{metric:<12} {values['base']:>8.3f} {values['tuned']:>8.3f} {values['delta']:>+8.3f}")
    lines.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in summary["verdicts"].items()))
    lines.extend(probe_lines(report.get("probes") or {}))
    return "\n".join(lines)


def probe_lines(probes: dict) -> list[str]:
    """One line per probe the report holds, as a person reads it."""
    lines = []
    if "forgetting" in probes:
        lines.append(probes["forgetting"]["summary"])
    limits = probes.get("limits") or {}
    if "off_topic" in limits:
        off = limits["off_topic"]
        lines.append(f"off-topic questions kept within limits: base {off['base']['good']}/{off['base']['asked']}, "
                     f"tuned {off['tuned']['good']}/{off['tuned']['asked']} (tuned redirected "
                     f"{off['tuned']['redirected']})")
    unanswerable = limits.get("unanswerable") or {}
    if "tuned" in unanswerable:
        lines.append(f"unanswerable in-domain questions admitted: base {unanswerable['base']['good']}/"
                     f"{unanswerable['base']['asked']}, tuned {unanswerable['tuned']['good']}/"
                     f"{unanswerable['tuned']['asked']}")
    elif "skipped" in unanswerable:
        lines.append(f"unanswerable questions: {unanswerable['skipped']}")
    retrieval = probes.get("retrieval") or {}
    if retrieval:
        rates = ", ".join(f"{column} {value:.1%}" for column, value in retrieval["key_fact"].items())
        seconds = retrieval["seconds_per_question"]
        lines.append(f"retrieval (BM25, top {retrieval['top_k']} of {retrieval['passages']} passages): key facts "
                     f"{rates}; {seconds['without retrieval']:.2f} s vs {seconds['with retrieval']:.2f} s a question")
    memorised = probes.get("memorised") or {}
    if memorised:
        lines.append(memorised.get("summary") or f"memorised vs generalised: {memorised.get('skipped')}")
    return lines


PROBE_DETAIL_COLUMNS = ["probe", "side", "question", "answer", "why"]


def probe_detail_rows(probes: dict) -> list[list[str]]:
    """What the probes caught, a row each: every general skill the tuning lost (with the base's right answer), and
    every off-topic or unanswerable question a side answered badly, with the rule that decided."""
    rows = []
    for lost in (probes.get("forgetting") or {}).get("lost") or []:
        rows.append(["forgetting", "tuned", lost["question"], lost["tuned"],
                     f"{lost.get('why', '')} (the base answered: {lost['base']})"])
    limits = probes.get("limits") or {}
    for part, name in (("off_topic", "off-topic"), ("unanswerable", "unanswerable")):
        for side in ("base", "tuned"):
            for failure in ((limits.get(part) or {}).get(side) or {}).get("failures") or []:
                rows.append([name, side, failure["question"], failure["reply"],
                             f"{failure['rule']}: {failure['why']}"])
    return rows
