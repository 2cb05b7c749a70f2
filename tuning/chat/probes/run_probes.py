"""The scorecard's probes, asked of base and tuned with the scorecard's own batched generation.

`python -m tuning eval --run RUN --probes forgetting,limits,memorised,retrieval` (or a recipe's training.probes)
adds each probe's report to eval.json under "probes". Each probe can be left out; `sample` asks a seeded sample of
each shipped set (the quick mode: a scorecard of N questions samples N of each). The memorised and retrieval probes
ask the scorecard's own held-out questions, so they cost what its sample costs and reuse its answers.
"""

from __future__ import annotations

import dataclasses
import time

from tuning.chat.probes.forgetting import forgetting_report, judge, load_probe_set
from tuning.chat.probes.limits import (
    KALEVALA_UNANSWERABLE_FILE,
    OFF_TOPIC_FILE,
    domain_terms,
    load_questions,
    off_topic_counts,
    unanswerable_counts,
)
from tuning.chat.retrieval import DEFAULT_TOP_K, NO_SOURCES, RetrievalIndex, sources_for, with_passages
from tuning.chat.scorecard import fold, has_key_facts, sample_examples
from tuning.config import PROBE_NAMES, check_probe_names
from tuning.data.examples import load_examples, reference_answers, user_prompts
from tuning.errors import UsageError

PROBES = PROBE_NAMES
SHORT_REPLY_TOKENS = 32  # general and off-topic questions want a line, and a redirect is one sentence
# Measured (AMD EPYC, 2 cores, 48 general questions, 32 tokens): batches of 48 took 6.3 s, of 16 7.8 s, of 8 10.9 s.
SHORT_BATCH = 32


def parse_probes(text: str | None) -> tuple[str, ...]:
    """'forgetting,limits' -> ('forgetting', 'limits'); UsageError naming the known probes for anything else."""
    names = tuple(dict.fromkeys(name.strip() for name in (text or "").split(",") if name.strip()))
    check_probe_names(names, "--probes")
    return names


def probe_batches(probes: tuple[str, ...], held_out: int, sample: int, answer_tokens: int) -> list[tuple[int, int]]:
    """(questions, new tokens) of each generate pass the probes make (base and tuned are a pass each), for the
    estimate: held_out questions in the scorecard, the shipped sets sampled to `sample` (0: all). An upper bound:
    the unanswerable set is counted though only the Kalevala ships one; retrieval's longer prompts are not."""
    def both(count: int, tokens: int) -> list[tuple[int, int]]:
        return [(min(count, sample) if sample > 0 else count, tokens)] * 2

    passes = {"forgetting": both(len(load_probe_set()), SHORT_REPLY_TOKENS),
              "limits": [*both(len(load_questions(OFF_TOPIC_FILE)), SHORT_REPLY_TOKENS),
                         *both(len(load_questions(KALEVALA_UNANSWERABLE_FILE)), SHORT_REPLY_TOKENS)],
              "memorised": [(held_out, answer_tokens)],  # the trained wordings, tuned only
              "retrieval": [(held_out, answer_tokens)] * 2}  # base and tuned, passages in the prompt
    return [batch for name in probes for batch in passes[name]]


def memorised_pairs(held_out: list[dict], training: list[dict]) -> list[dict]:
    """For each held-out question with key facts, the training question whose answer holds those facts: the same
    facts asked as trained, to set beside the held-out paraphrase."""
    answers = [(question, fold(answer)) for question, answer in zip(user_prompts(training), reference_answers(training))]
    pairs = []
    for example, paraphrase in zip(held_out, user_prompts(held_out)):
        facts = list(example.get("key_facts") or [])
        if not facts:
            continue
        trained = next((question for question, answer in answers if all(fold(f) in answer for f in facts)), None)
        if trained is not None:
            pairs.append({"trained": trained, "paraphrase": paraphrase, "key_facts": facts})
    return pairs


def run_probes(chat, probes: tuple[str, ...], train_file, held_out: list[dict], settings, sample: int = 0,
               seed: int = 42, unanswerable_file=None, sources=None, top_k: int = DEFAULT_TOP_K,
               answered: dict[str, tuple[str, str]] | None = None, seconds_per_answer: float = 0.0) -> dict:
    """Each asked probe's report (eval.json's "probes"), generating with the scorecard's batched answers.
    held_out: the scorecard's questions (examples); `answered`: its (base, tuned) answers by question, reused
    rather than asked again, and the seconds each of those pairs took."""
    answered = answered or {}
    short = dataclasses.replace(settings, max_new_tokens=min(settings.max_new_tokens, SHORT_REPLY_TOKENS))
    report = {}
    if "retrieval" in probes:  # first: a run without source documents fails before any other probe spends time
        report["retrieval"] = _retrieval(chat, train_file, held_out, settings, sources, top_k, answered,
                                         seconds_per_answer)
    general = sample_examples(load_probe_set(), sample, seed) if "forgetting" in probes else []
    limits = _limit_questions(train_file, sample, seed, unanswerable_file) if "limits" in probes else {}
    # The short questions in one base pass, in big batches (a batch runs to its longest reply, so fewer batches
    # of these one-line replies cost less); the tuned side skips the general questions the base got wrong: a
    # skill it never had can't be forgotten.
    def answers(questions: list[str], adapter_on: bool) -> dict[str, str]:
        replies = chat.answer_many(questions, adapter_on=adapter_on, settings=short, batch_size=SHORT_BATCH) \
            if questions else []
        return dict(zip(questions, replies))

    base = answers([q.question for q in general] + [q for part in limits.values() for q in part], False)
    known = [q.question for q in general if judge(base[q.question], q).correct]
    tuned = answers(known + [q for part in limits.values() for q in part], True)
    if "forgetting" in probes:
        report["forgetting"] = forgetting_report(general, [base[q.question] for q in general],
                                                 [tuned.get(q.question, "") for q in general]).to_json()
    if "limits" in probes:
        report["limits"] = _limits_report(train_file, limits, base, tuned)
    if "memorised" in probes:
        report["memorised"] = _memorised(chat, train_file, held_out, settings, answered)
    return report


def _both(chat, questions: list[str], settings, answered: dict) -> tuple[list[str], list[str]]:
    """(base, tuned) answers to the questions, taken from the scorecard's own where it asked them all."""
    if questions and all(q in answered for q in questions):
        return [answered[q][0] for q in questions], [answered[q][1] for q in questions]
    return chat.answer_both_many(questions, settings=settings)


def _limit_questions(train_file, sample, seed, unanswerable_file) -> dict[str, list[str]]:
    """The limits probe's questions: off-topic ones, and in-domain ones the data never answers (the Kalevala's
    for a run on its pairs, or the file given; none otherwise)."""
    questions = {"off_topic": sample_examples(load_questions(OFF_TOPIC_FILE), sample, seed)}
    train_questions = user_prompts(load_examples(train_file).examples)
    unanswerable_file = unanswerable_file or (KALEVALA_UNANSWERABLE_FILE if is_kalevala_run(train_questions) else None)
    if unanswerable_file is not None:
        questions["unanswerable"] = sample_examples(load_questions(unanswerable_file), sample, seed)
    return questions


def _limits_report(train_file, questions: dict[str, list[str]], base: dict, tuned: dict) -> dict:
    training = load_examples(train_file).examples
    general = " ".join([*load_questions(OFF_TOPIC_FILE), *(q.question for q in load_probe_set())])
    terms = domain_terms(reference_answers(training), general)
    off_topic = questions["off_topic"]
    result = {"off_topic": {side: _counts_json(off_topic_counts(off_topic, [replies[q] for q in off_topic], terms))
                            for side, replies in (("base", base), ("tuned", tuned))}}
    if "unanswerable" not in questions:
        result["unanswerable"] = {"skipped": "no questions the data never answers were given for this data -- "
                                             "write a JSONL of {\"question\": ...} and pass --unanswerable FILE"}
        return result
    unanswerable = questions["unanswerable"]
    result["unanswerable"] = {side: _counts_json(unanswerable_counts(unanswerable, [replies[q] for q in unanswerable]))
                              for side, replies in (("base", base), ("tuned", tuned))}
    return result


def is_kalevala_run(train_questions: list[str]) -> bool:
    """True when a run trained on the shipped Kalevala pairs (at least half its questions are theirs): the Kalevala's
    unanswerable questions and source document then apply."""
    shipped = set(user_prompts(load_examples(KALEVALA_UNANSWERABLE_FILE.parent / "train.jsonl").examples))
    return bool(train_questions) and sum(q in shipped for q in train_questions) >= len(train_questions) / 2


def _counts_json(counts) -> dict:
    return {"asked": counts.asked, "good": counts.good, "share": round(counts.share(), 4),
            "redirected": counts.redirected, "failures": counts.examples}


def _memorised(chat, train_file, held_out, settings, answered) -> dict:
    pairs = memorised_pairs(held_out, load_examples(train_file).examples)
    if not pairs:
        return {"skipped": "no held-out question has key facts that a training answer holds"}
    # The tuned model only: the trained wordings, and the paraphrases unless the scorecard already asked them.
    paraphrases = [p["paraphrase"] for p in pairs]
    known = all(q in answered for q in paraphrases)
    asked = [p["trained"] for p in pairs] + ([] if known else paraphrases)
    answers = chat.answer_many(asked, adapter_on=True, settings=settings)
    as_trained = answers[:len(pairs)]
    paraphrased = [answered[q][1] for q in paraphrases] if known else answers[len(pairs):]
    trained_hits = sum(bool(has_key_facts(a, p["key_facts"])) for a, p in zip(as_trained, pairs))
    paraphrase_hits = sum(bool(has_key_facts(a, p["key_facts"])) for a, p in zip(paraphrased, pairs))
    return {"questions": len(pairs), "as_trained": round(trained_hits / len(pairs), 4),
            "paraphrased": round(paraphrase_hits / len(pairs), 4),
            "summary": f"key facts asked as trained {trained_hits}/{len(pairs)}, as held-out paraphrases "
                       f"{paraphrase_hits}/{len(pairs)}"}



def _retrieval(chat, train_file, held_out, settings, sources, top_k, answered, seconds_per_answer) -> dict:
    """Key facts and seconds per question for base, tuned, base + retrieval and tuned + retrieval."""
    paths = sources_for(user_prompts(load_examples(train_file).examples), sources)
    if not paths:
        raise UsageError(NO_SOURCES)
    index = RetrievalIndex.from_documents(paths)
    held_out = [e for e in held_out if e.get("key_facts")]
    if not held_out:
        raise UsageError("no held-out question has key facts to score retrieval by -- give the validation rows "
                         "\"key_facts\" (the words a right answer must contain)")
    questions = user_prompts(held_out)
    found = index.top(questions, top_k)
    started = time.perf_counter()
    base, tuned = _both(chat, questions, settings, answered)
    plain_s = time.perf_counter() - started
    if all(q in answered for q in questions):  # the scorecard's own pass, as it timed it
        plain_s = seconds_per_answer * len(questions)
    started = time.perf_counter()
    base_r, tuned_r = chat.answer_both_many([with_passages(q, p) for q, p in zip(questions, found)], settings=settings)
    retrieval_s = time.perf_counter() - started
    facts = [e["key_facts"] for e in held_out]

    def rate(answers: list[str]) -> float:
        return round(sum(bool(has_key_facts(a, f)) for a, f in zip(answers, facts)) / len(facts), 4)

    per_question = len(questions)
    return {
        "questions": per_question, "top_k": top_k, "sources": [p.name for p in paths], "passages": len(index.passages),
        "key_fact": {"base": rate(base), "tuned": rate(tuned), "base+retrieval": rate(base_r),
                     "tuned+retrieval": rate(tuned_r)},
        # Base and tuned answer together (the scorecard's strategy), so seconds are per question for both sides.
        "seconds_per_question": {"without retrieval": round(plain_s / per_question, 3),
                                 "with retrieval": round(retrieval_s / per_question, 3)},
        "examples": [{"question": q, "passages": [{**p.provenance(), "text": p.text} for p in ps],
                      "base+retrieval": b, "tuned+retrieval": t}
                     for q, ps, b, t in list(zip(questions, found, base_r, tuned_r))[:5]],
    }
