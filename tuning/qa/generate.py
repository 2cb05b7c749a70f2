"""Generate question/answer pairs from source text in small validated batches, with any backend.

Each batch asks the LLM for N pairs from one chunk, parses the reply robustly (one retry), checks every
pair (form, length, grounding in the chunk, optional LLM judge) and removes exact and near duplicates
against everything kept so far and the existing dataset. Nothing is dropped silently: removed pairs and
unparseable batches are returned with their reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tuning.config import ConfigError
from tuning.guards.caps import CAP_ENV_PREFIX, caps, check_cap
from tuning.qa.backends import BackendError, Completion
from tuning.qa.judge import parse_judge_reply
from tuning.qa.parse import QAParseError, parse_qa_reply
from tuning.qa.prompts import (
    MAX_PAIRS,
    MIN_PAIRS,
    generation_messages,
    judge_budget,
    judge_messages,
    off_topic_pairs,
    pair_budget,
    retry_messages,
)
from tuning.qa.sources import Chunk
from tuning.qa.validate import (
    DUPLICATE,
    EMPTY,
    LOW_JUDGE_SCORE,
    WEAKLY_GROUNDED,
    DuplicateIndex,
    ValidationSettings,
    form_flags,
    grounding_score,
)

FACT, OFF_TOPIC = "fact", "off-topic"
JSON_REPLY_PREFIX = '[{"question": "'  # a local model continues from here (see Completion.reply_prefix)
JSON_REPLY_STOP = ("}]",)
JUDGE_REPLY_PREFIX = '[{"id": 1, "score": '
JUDGE_TEMPERATURE = 0.0  # a judge should be repeatable
ATTEMPTS = 2  # a batch whose reply can't be parsed is asked once more, then reported
SEED_STRIDE = 100


@dataclass
class QASettings:
    """How much to generate and how strictly to check it."""

    pairs_per_batch: int = 10
    batches: int = 0  # 0: one batch per chunk; more: later rounds ask each chunk for new questions
    temperature: float = 0.3
    seed: int = 0  # batch n, attempt k draws with seed + 100n + k: a rerun gives the same pairs
    max_reply_tokens: int = 0  # 0: enough for the pairs asked; less caps cost (a cut-off reply keeps its whole pairs)
    off_topic: int = 0  # off-topic prompts whose answer steers back to `topic`
    topic: str = ""
    judge: bool = False
    validation: ValidationSettings = field(default_factory=ValidationSettings)

    def reply_tokens(self) -> int:
        """max_tokens of a generation request."""
        return self.max_reply_tokens or pair_budget(self.pairs_per_batch)

    def check(self, chunk_count: int | None = None) -> None:
        """Raise ConfigError naming the setting that is out of range, CapError when the plan (batches, or one per
        passage of chunk_count when batches is 0) is over this app's cap."""
        if not MIN_PAIRS <= self.pairs_per_batch <= MAX_PAIRS:
            raise ConfigError(f"pairs per batch must be {MIN_PAIRS}-{MAX_PAIRS}, got {self.pairs_per_batch}")
        if self.batches < 0 or self.off_topic < 0 or self.max_reply_tokens < 0:
            raise ConfigError("batches, off-topic prompts and reply tokens can't be negative")
        if not 0.0 < self.validation.duplicate_similarity <= 1.0:
            raise ConfigError(f"the duplicate threshold must be in (0, 1], got {self.validation.duplicate_similarity}")
        _check_batch_cap(self.batches, chunk_count)


@dataclass
class GeneratedPair:
    """One generated pair with where it came from and what the checks found."""

    question: str
    answer: str
    provenance: dict
    kind: str = FACT
    flags: list[str] = field(default_factory=list)
    grounding: float | None = None
    judge_score: int | None = None
    judge_reason: str = ""
    removed: str = ""  # why the pair is not in the dataset (duplicate, empty); "" when kept

    def to_row(self) -> dict:
        """A dataset row: the conversation plus provenance and check results (the data loader ignores extras)."""
        row = {"messages": [{"role": "user", "content": self.question},
                            {"role": "assistant", "content": self.answer}],
               "provenance": {**self.provenance, "kind": self.kind},
               "checks": {"flags": self.flags, "grounding": self.grounding,
                          "judge_score": self.judge_score, "judge_reason": self.judge_reason}}
        if self.removed:
            row["removed"] = self.removed
        return row

    @classmethod
    def from_row(cls, row: dict) -> GeneratedPair:
        """Back from to_row()."""
        turns = {m["role"]: m["content"] for m in row["messages"]}
        provenance = dict(row.get("provenance") or {})
        checks = row.get("checks") or {}
        return cls(question=turns.get("user", ""), answer=turns.get("assistant", ""),
                   kind=provenance.pop("kind", FACT), provenance=provenance, flags=list(checks.get("flags") or []),
                   grounding=checks.get("grounding"), judge_score=checks.get("judge_score"),
                   judge_reason=checks.get("judge_reason") or "", removed=row.get("removed", ""))


@dataclass
class BatchResult:
    """What one batch produced: kept pairs (some flagged), removed pairs, and any failure."""

    number: int
    chunk: Chunk | None  # None for the off-topic batch
    kept: list[GeneratedPair] = field(default_factory=list)
    removed: list[GeneratedPair] = field(default_factory=list)
    error: str = ""  # set when no reply could be parsed after the retry
    attempts: int = 0
    notes: list[str] = field(default_factory=list)
    raw_reply: str = ""  # the last reply, kept so a failed batch can be inspected


@dataclass
class GenerationSummary:
    """Counts over all batches."""

    batches: int = 0
    failed_batches: int = 0
    made: int = 0
    kept: int = 0
    flagged: int = 0
    duplicates: int = 0
    invalid: int = 0

    def as_text(self) -> str:
        """One line for people."""
        failed = f", {self.failed_batches} failed" if self.failed_batches else ""
        return (f"{self.batches} batch{'' if self.batches == 1 else 'es'}{failed}: made {self.made}, kept {self.kept} "
                f"({self.flagged} flagged for review), duplicates removed {self.duplicates}, invalid {self.invalid}")


def count_batches(chunk_count: int, batches: int = 0) -> int:
    """How many batches plan_batches makes, by arithmetic: a plan's size must cost nothing to know."""
    return (batches or chunk_count) if chunk_count else 0


def plan_batches(chunks: list[Chunk], batches: int = 0) -> Iterator[list[Chunk]]:
    """Rounds of chunks, one batch each: all chunks once (batches=0), an even spread over the source
    when fewer batches are wanted, and further rounds over the chunks when more are. Lazy: a round is
    made when the previous one is done, so planning a huge count allocates nothing."""
    if not chunks:
        return
    total = count_batches(len(chunks), batches)
    for start in range(0, total, len(chunks)):
        size = min(len(chunks), total - start)
        picks = sorted({round(i * len(chunks) / size) for i in range(size)}) if size < len(chunks) else range(len(chunks))
        yield [chunks[i] for i in picks]


def summarize(results: Iterable[BatchResult]) -> GenerationSummary:
    """Made / kept / flagged / duplicates over the batches."""
    summary = GenerationSummary()
    for result in results:
        summary.batches += 1
        summary.failed_batches += bool(result.error)
        summary.made += len(result.kept) + len(result.removed)
        summary.kept += len(result.kept)
        summary.flagged += sum(1 for pair in result.kept if pair.flags)
        summary.duplicates += sum(1 for pair in result.removed if pair.removed.startswith(DUPLICATE))
        summary.invalid += sum(1 for pair in result.removed if pair.removed == EMPTY)
    return summary


def generate_qa(chunks: list[Chunk], backend, settings: QASettings | None = None,
                existing_questions: Iterable[str] = (), should_stop: Callable[[], bool] = lambda: False,
                ) -> Iterator[BatchResult]:
    """Yield each batch's result as it completes; up to backend.max_in_flight batches run at once.
    Stopping (should_stop, or closing the iterator) lets running requests finish unread."""
    settings = settings or QASettings()
    settings.check(len(chunks))
    duplicates = DuplicateIndex(list(existing_questions), settings.validation.duplicate_similarity)
    asked: dict[tuple[str, int], list[str]] = {}  # questions made per chunk, shown to its next batch
    number = 0
    # Not a `with` block: its exit would wait for in-flight requests, and a cancel must return at once.
    pool = ThreadPoolExecutor(max_workers=backend.max_in_flight, thread_name_prefix="qa-batch")
    try:
        for round_chunks in plan_batches(chunks, settings.batches):
            queue = list(round_chunks)
            running: dict[Future, tuple[int, Chunk]] = {}
            while queue or running:
                while queue and len(running) < backend.max_in_flight and not should_stop():
                    chunk = queue.pop(0)
                    number += 1
                    previous = list(asked.get(_chunk_key(chunk), []))
                    running[pool.submit(_run_batch, number, chunk, previous, backend, settings)] = (number, chunk)
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f][0]):
                    running.pop(future)
                    result = future.result()
                    _remove_duplicates(result, duplicates)
                    asked.setdefault(_chunk_key(result.chunk), []).extend(
                        p.question for p in result.kept + result.removed)
                    yield result
        if settings.off_topic and not should_stop():
            yield _off_topic_batch(number + 1, settings, duplicates)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def failure_rows(results: Iterable[BatchResult]) -> list[dict]:
    """What didn't make it: removed pairs with their reason, and failed batches with their last reply."""
    rows = []
    for result in results:
        rows += [pair.to_row() for pair in result.removed]
        if result.error:
            chunk = result.chunk.provenance() if result.chunk else {}
            rows.append({"failed_batch": result.number, **chunk, "error": result.error, "raw_reply": result.raw_reply})
    return rows


def _check_batch_cap(batches: int, chunk_count: int | None) -> None:
    """CapError when the batches asked for (or one per passage, when 0) are over caps().generate_batches."""
    cap = caps().generate_batches
    hint = f" (whoever runs the app can raise {CAP_ENV_PREFIX}GENERATE_BATCHES)"
    if batches:
        check_cap(batches, cap, "batches", f"ask for {cap} or fewer: fewer batches spread evenly over the source{hint}")
    elif chunk_count is not None:
        check_cap(count_batches(chunk_count), cap, "batches (one per passage of the source)",
                  f"set Batches to {cap} or fewer to spread them over the source, or give a shorter source{hint}")


def _chunk_key(chunk: Chunk) -> tuple[str, int]:
    return chunk.source, chunk.chunk_id


def _run_batch(number: int, chunk: Chunk, previous: list[str], backend, settings: QASettings) -> BatchResult:
    """Ask for pairs (retrying once), then check each one against its chunk; runs in a worker thread."""
    result = BatchResult(number=number, chunk=chunk)
    messages = generation_messages(chunk, settings.pairs_per_batch, previous)
    parsed = None
    for attempt in range(1, ATTEMPTS + 1):
        result.attempts = attempt
        request = Completion(messages, settings.reply_tokens(), settings.temperature,
                             reply_prefix=JSON_REPLY_PREFIX, stop=JSON_REPLY_STOP,
                             seed=settings.seed + SEED_STRIDE * number + attempt)
        try:
            result.raw_reply = backend.complete(request)
            parsed = parse_qa_reply(result.raw_reply)
            break
        except (QAParseError, BackendError) as exc:
            result.error = f"attempt {attempt}: {exc}"
            messages = retry_messages(messages, str(exc)[:200]) if isinstance(exc, QAParseError) else messages
    if parsed is None:
        return result
    result.error = ""
    result.notes = parsed.repaired + parsed.skipped
    if len(parsed.pairs) != settings.pairs_per_batch:
        result.notes.append(f"asked for {settings.pairs_per_batch} pairs, got {len(parsed.pairs)}")
    pairs = [_checked_pair(p, chunk, number, settings.validation) for p in parsed.pairs]
    if settings.judge and pairs:
        _judge(pairs, chunk, backend, settings.validation, result.notes)
    result.kept = pairs
    return result


def _checked_pair(pair: dict, chunk: Chunk, batch: int, validation: ValidationSettings) -> GeneratedPair:
    question, answer = pair["question"].strip(), pair["answer"].strip()
    checked = GeneratedPair(question=question, answer=answer, provenance={**chunk.provenance(), "batch": batch})
    if not question or not answer:
        checked.removed = EMPTY
        return checked
    checked.flags = form_flags(question, answer, validation)
    checked.grounding = round(grounding_score(answer, chunk.text), 3)
    if checked.grounding < validation.min_grounding:
        checked.flags.append(WEAKLY_GROUNDED)
    return checked


def _judge(pairs: list[GeneratedPair], chunk: Chunk, backend, validation: ValidationSettings, notes: list[str]) -> None:
    """Score the pairs 1-10 with the same backend; flag those under the threshold."""
    listed = [{"question": p.question, "answer": p.answer} for p in pairs]
    try:
        reply = backend.complete(Completion(judge_messages(chunk, listed), judge_budget(len(listed)), JUDGE_TEMPERATURE,
                                            reply_prefix=JUDGE_REPLY_PREFIX, stop=JSON_REPLY_STOP))
    except BackendError as exc:
        notes.append(f"judge: {exc}")
        return
    scores = parse_judge_reply(reply, len(pairs))
    if len(scores) < len(pairs):
        notes.append(f"judge scored {len(scores)} of {len(pairs)} pairs; the rest are unscored")
    for number, judgement in scores.items():
        pair = pairs[number - 1]
        pair.judge_score, pair.judge_reason = judgement.score, judgement.reason
        if judgement.score < validation.min_judge_score:
            pair.flags.append(LOW_JUDGE_SCORE)


def _remove_duplicates(result: BatchResult, duplicates: DuplicateIndex) -> None:
    """Move empty pairs and copies of earlier questions (this batch, other batches, the dataset) to removed."""
    kept = []
    for pair in result.kept:
        if not pair.removed and (match := duplicates.find(pair.question)):
            earlier, similarity = match
            pair.removed = f"{DUPLICATE} of {earlier!r} (similarity {similarity:.2f})"
        if pair.removed:
            result.removed.append(pair)
        else:
            duplicates.add(pair.question)
            kept.append(pair)
    result.kept = kept


def _off_topic_batch(number: int, settings: QASettings, duplicates: DuplicateIndex) -> BatchResult:
    result = BatchResult(number=number, chunk=None, attempts=0)
    for pair in off_topic_pairs(settings.off_topic, settings.topic):
        result.kept.append(GeneratedPair(question=pair["question"], answer=pair["answer"], kind=OFF_TOPIC,
                                         provenance={"source": "off-topic redirect", "batch": number}))
    if settings.off_topic > len(result.kept):
        result.notes.append(f"only {len(result.kept)} distinct off-topic prompts are built in")
    _remove_duplicates(result, duplicates)
    return result
