"""The scorecard's probes, asked of base and tuned with the scorecard's own batched generation.

`python -m tuning eval --run RUN --probes forgetting,limits,memorised,retrieval` (or a recipe's training.probes)
adds each probe's report to eval.json under "probes". Each probe can be left out; `sample` asks a seeded sample of
each shipped set (the quick mode: a scorecard of N questions samples N of each). The memorised and retrieval probes
ask the scorecard's own held-out questions, so they cost what its sample costs and reuse its answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tuning.chat.probes.forgetting import forgetting_report, load_probe_set
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
from tuning.chat.side_by_side import Pass
from tuning.config import PROBE_NAMES, check_probe_names
from tuning.data.examples import load_examples, reference_answers, user_prompts
from tuning.errors import UsageError

PROBES = PROBE_NAMES
SHORT_REPLY_TOKENS = 32  # general and off-topic questions want a line, and a redirect is one sentence
# Measured (AMD EPYC, 2 cores, 48 general questions, 32 tokens): batches of 48 took 6.3 s, of 16 7.8 s, of 8 10.9 s.
SHORT_BATCH = 32
# The memorised probe's trained wordings (tuned only, short prompts, scorecard-length answers): 58 of them took 19.5 s
# in batches of 8, 14.3 s of 16, 9.0 s of 32, the same 44 answers holding their facts (AMD EPYC, 2 cores).
MEMORISED_BATCH = 32
# The retrieval pass (58 questions, a ~170-token passage prompt each, base and tuned): 65-78 s in batches of 8,
# 48-56 s of 16 with base and tuned on a core each, the same answers (AMD EPYC, 2 cores, two rounds). 32 was no faster.
RETRIEVAL_BATCH = 16


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


@dataclass
class ProbePlan:
    """The asked probes' questions, and the generate passes that answer them (by name), before anything runs."""

    probes: tuple[str, ...]
    train_file: Path
    retrieval: dict | None
    general: list
    limits: dict[str, list[str]]
    pairs: list[dict]
    short_questions: list[str]
    passes: dict[str, Pass] = field(default_factory=dict)


def plan_probes(probes: tuple[str, ...], train_file, held_out: list[dict], settings, sample: int = 0, seed: int = 42,
                unanswerable_file=None, sources=None, top_k: int = DEFAULT_TOP_K,
                answered: set[str] | frozenset = frozenset()) -> ProbePlan:
    """What the probes will ask (UsageError naming the fix for a probe that can't run: nothing is generated yet).
    `answered`: questions whose base and tuned answers the scorecard has, which no pass asks again."""
    short = dataclasses.replace(settings, max_new_tokens=min(settings.max_new_tokens, SHORT_REPLY_TOKENS))
    retrieval = _retrieval_questions(train_file, held_out, sources, top_k) if "retrieval" in probes else None
    general = sample_examples(load_probe_set(), sample, seed) if "forgetting" in probes else []
    limits = _limit_questions(train_file, sample, seed, unanswerable_file) if "limits" in probes else {}
    pairs = memorised_pairs(held_out, load_examples(train_file).examples) if "memorised" in probes else []
    plan = ProbePlan(probes, Path(train_file), retrieval, general, limits, pairs,
                     [q.question for q in general] + [q for part in limits.values() for q in part])
    if retrieval is not None:
        plain = retrieval["questions"]
        if not all(q in answered for q in plain):
            plan.passes |= {"plain base": Pass(plain, False, settings), "plain tuned": Pass(plain, True, settings)}
        plan.passes |= {side: Pass(retrieval["prompts"], on, settings, RETRIEVAL_BATCH)
                        for side, on in (("retrieval base", False), ("retrieval tuned", True))}
    # The short questions (general and off-topic ones want a line) in big batches: a batch runs to its longest
    # reply, so fewer batches of one-line replies cost less. Both sides ask all of them, so neither waits on the
    # other; the forgetting report counts only the skills the base had.
    if plan.short_questions:
        plan.passes |= {f"short {side}": Pass(plan.short_questions, on, short, SHORT_BATCH)
                        for side, on in (("base", False), ("tuned", True))}
    if pairs:  # the tuned model only: the trained wordings, and the paraphrases unless the scorecard asked them
        paraphrases = [p["paraphrase"] for p in pairs]
        asked = [p["trained"] for p in pairs] + ([] if all(q in answered for q in paraphrases) else paraphrases)
        plan.passes["memorised"] = Pass(asked, True, settings, MEMORISED_BATCH)
    return plan


def probe_reports(plan: ProbePlan, done: dict, answered: dict[str, tuple[str, str]],
                  seconds_per_answer: float = 0.0) -> dict:
    """Each asked probe's report (eval.json's "probes") from its passes' answers (`done`, by pass name) and the
    scorecard's (base, tuned) answers by question, which took seconds_per_answer each."""
    report = {}
    if plan.retrieval is not None:
        report["retrieval"] = _retrieval_report(plan.retrieval, done, answered, seconds_per_answer)
    base = dict(zip(plan.short_questions, done["short base"].answers)) if plan.short_questions else {}
    tuned = dict(zip(plan.short_questions, done["short tuned"].answers)) if plan.short_questions else {}
    if "forgetting" in plan.probes:
        report["forgetting"] = forgetting_report(plan.general, [base[q.question] for q in plan.general],
                                                 [tuned[q.question] for q in plan.general]).to_json()
    if "limits" in plan.probes:
        report["limits"] = _limits_report(plan.train_file, plan.limits, base, tuned)
    if "memorised" in plan.probes:
        report["memorised"] = _memorised_report(plan.pairs, done.get("memorised"), answered)
    return report


def answer_in_lanes(chat, passes: dict[str, Pass]) -> dict:
    """Every pass answered in one chat.answer_passes call, by name: on a CPU where both sides at once measured
    faster, the base passes run on one core and the tuned ones on the other, each side in the order given, so the
    tuned side's short answers don't leave its core idle while the base model rambles to the limit."""
    ordered = sorted(passes.items(), key=lambda item: item[1].adapter_on)  # stable: each side keeps its order
    return dict(zip((name for name, _ in ordered), chat.answer_passes([one for _, one in ordered]))) if ordered else {}


def run_probes(chat, probes: tuple[str, ...], train_file, held_out: list[dict], settings, sample: int = 0,
               seed: int = 42, unanswerable_file=None, sources=None, top_k: int = DEFAULT_TOP_K,
               answered: dict[str, tuple[str, str]] | None = None, seconds_per_answer: float = 0.0) -> dict:
    """Each asked probe's report, generating its passes now (score_run plans them beside the scorecard's own).
    held_out: the scorecard's questions (examples); `answered`: its (base, tuned) answers by question, reused
    rather than asked again, and the seconds each of those pairs took."""
    answered = answered or {}
    plan = plan_probes(probes, train_file, held_out, settings, sample, seed, unanswerable_file, sources, top_k,
                       set(answered))
    return probe_reports(plan, answer_in_lanes(chat, plan.passes), answered, seconds_per_answer)


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


def _memorised_report(pairs: list[dict], done, answered: dict) -> dict:
    if not pairs:
        return {"skipped": "no held-out question has key facts that a training answer holds"}
    answers = done.answers
    as_trained = answers[:len(pairs)]
    paraphrases = [p["paraphrase"] for p in pairs]
    paraphrased = answers[len(pairs):] or [answered[q][1] for q in paraphrases]
    trained_hits = sum(bool(has_key_facts(a, p["key_facts"])) for a, p in zip(as_trained, pairs))
    paraphrase_hits = sum(bool(has_key_facts(a, p["key_facts"])) for a, p in zip(paraphrased, pairs))
    return {"questions": len(pairs), "as_trained": round(trained_hits / len(pairs), 4),
            "paraphrased": round(paraphrase_hits / len(pairs), 4),
            "summary": f"key facts asked as trained {trained_hits}/{len(pairs)}, as held-out paraphrases "
                       f"{paraphrase_hits}/{len(pairs)}"}


def _retrieval_questions(train_file, held_out, sources, top_k) -> dict:
    """The retrieval probe's questions and their prompts with passages; UsageError naming the fix when the run has
    no source documents or no question has key facts."""
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
    return {"paths": paths, "index": index, "top_k": top_k, "questions": questions, "found": found,
            "facts": [e["key_facts"] for e in held_out],
            "prompts": [with_passages(q, p) for q, p in zip(questions, found)]}


def both_sides_seconds(base, tuned) -> float:
    """Wall seconds for both sides of a pass pair: from the first start to the last end (at once, or in turn)."""
    return max(base.ended, tuned.ended) - min(base.started, tuned.started)


def _retrieval_report(retrieval: dict, done: dict, answered: dict, seconds_per_answer: float) -> dict:
    """Key facts and seconds per question for base, tuned, base + retrieval and tuned + retrieval."""
    questions, facts = retrieval["questions"], retrieval["facts"]
    if "plain base" in done:
        base, tuned = done["plain base"].answers, done["plain tuned"].answers
        plain_s = both_sides_seconds(done["plain base"], done["plain tuned"])
    else:  # the scorecard's own pass, as it timed it
        base, tuned = [answered[q][0] for q in questions], [answered[q][1] for q in questions]
        plain_s = seconds_per_answer * len(questions)
    base_r, tuned_r = done["retrieval base"].answers, done["retrieval tuned"].answers
    retrieval_s = both_sides_seconds(done["retrieval base"], done["retrieval tuned"])

    def rate(answers: list[str]) -> float:
        return round(sum(bool(has_key_facts(a, f)) for a, f in zip(answers, facts)) / len(facts), 4)

    per_question = len(questions)
    return {
        "questions": per_question, "top_k": retrieval["top_k"], "sources": [p.name for p in retrieval["paths"]],
        "passages": len(retrieval["index"].passages),
        "key_fact": {"base": rate(base), "tuned": rate(tuned), "base+retrieval": rate(base_r),
                     "tuned+retrieval": rate(tuned_r)},
        # Base and tuned answer together (the scorecard's strategy), so seconds are per question for both sides.
        "seconds_per_question": {"without retrieval": round(plain_s / per_question, 3),
                                 "with retrieval": round(retrieval_s / per_question, 3)},
        "examples": [{"question": q, "passages": [{**p.provenance(), "text": p.text} for p in ps],
                      "base+retrieval": b, "tuned+retrieval": t}
                     for q, ps, b, t in list(zip(questions, retrieval["found"], base_r, tuned_r))[:5]],
    }
