"""The batch pipeline: retry and report, duplicates, previous questions, concurrency, cancel, judge; and the
backend and settings both front ends build from a person's choices (tuning/qa/choices.py).

These tests script the LLM's replies: the pipeline's bookkeeping must be checked on known replies
(a real model can't be made to fail parsing on cue). Real models run in test_generate_qa_backends.py.
"""

import json
import threading

import pytest
from helpers import KALEVALA

from tuning.config import ConfigError
from tuning.guards.caps import CapError
from tuning.models.names import ModelNameError
from tuning.qa.backends import REMOTE, BackendError, LocalBackend
from tuning.qa.choices import OPENAI_COMPATIBLE, PROVIDERS, GenerationChoices, prepare_generation, qa_backend
from tuning.qa.generate import OFF_TOPIC, QASettings, failure_rows, generate_qa, plan_batches, summarize
from tuning.qa.sources import chunk_text, read_source
from tuning.qa.validate import LOW_JUDGE_SCORE, WEAKLY_GROUNDED, ValidationSettings

CHUNKS = chunk_text(read_source(KALEVALA / "source.md"), "source.md")


def pairs_json(pairs):
    return json.dumps([{"question": q, "answer": a} for q, a in pairs])


class ScriptedLLM:
    """Answers each request with reply(request, call_number); records the requests it saw."""

    kind, label = "scripted", "scripted replies"

    def __init__(self, reply, max_in_flight=1):
        self.reply, self.max_in_flight = reply, max_in_flight
        self.requests, self.lock = [], threading.Lock()

    def complete(self, request):
        with self.lock:
            self.requests.append(request)
            number = len(self.requests)
        return self.reply(request, number)


def chunk_of(request):
    text = request.messages[-1]["content"]
    return next(c for c in CHUNKS if c.text.strip() in text)


def grounded_pairs(request, number):
    """Ten questions quoting the chunk's own sentences, distinct per chunk."""
    chunk = chunk_of(request)
    sentences = [s for s in chunk.text.replace("\n", " ").split(". ") if len(s) > 20][:10]
    return pairs_json((f"What does part {chunk.chunk_id} say, point {i}: {s[:40]}?", s)
                      for i, s in enumerate(sentences))


def test_pairs_carry_provenance_and_checks():
    llm = ScriptedLLM(grounded_pairs)
    results = list(generate_qa(CHUNKS[:3], llm, QASettings(pairs_per_batch=10)))
    assert [r.number for r in results] == [1, 2, 3]
    for result in results:
        assert not result.error and result.kept
        for pair in result.kept:
            assert pair.provenance == {**result.chunk.provenance(), "batch": result.number}
            assert pair.grounding == 1.0 and WEAKLY_GROUNDED not in pair.flags
            row = pair.to_row()
            assert row["messages"][0] == {"role": "user", "content": pair.question}
            assert row["provenance"]["start"] == result.chunk.start


def test_unparseable_batch_is_retried_once_then_reported_with_its_reply():
    llm = ScriptedLLM(lambda request, n: "I cannot help with that.")
    [result] = generate_qa(CHUNKS[:1], llm)
    assert result.attempts == 2 and len(llm.requests) == 2
    assert "attempt 2" in result.error and "no JSON" in result.error
    assert "could not be used" in llm.requests[1].messages[-1]["content"], "the retry says what went wrong"
    [row] = failure_rows([result])
    assert row["failed_batch"] == 1 and row["raw_reply"] == "I cannot help with that."
    assert summarize([result]).failed_batches == 1


def test_a_retry_that_parses_recovers_the_batch():
    replies = iter(["Sure! Here you go:", pairs_json([("Who forged the Sampo?", "Ilmarinen forged it.")])])
    [result] = generate_qa(CHUNKS[:1], ScriptedLLM(lambda request, n: next(replies)))
    assert not result.error and result.attempts == 2 and len(result.kept) == 1
    assert "asked for 10 pairs, got 1" in result.notes


def test_backend_errors_are_retried_and_reported():
    def down(request, n):
        raise BackendError("http://127.0.0.1:9/v1: can't connect -- is the server running and the URL right?")

    [result] = generate_qa(CHUNKS[:1], ScriptedLLM(down))
    assert result.attempts == 2 and "can't connect" in result.error and not result.kept


def test_duplicates_are_removed_within_batch_across_batches_and_against_the_dataset():
    same = pairs_json([("Who compiled the Kalevala?", "Elias Lönnrot."),
                       ("Who compiled the Kalevala epic?", "Lönnrot."),  # near copy in the same batch
                       ("Who forged the Sampo?", "Ilmarinen."),  # copy of the existing dataset
                       ("What is Kalevala Day?", "28 February.")])
    llm = ScriptedLLM(lambda request, n: same)
    results = list(generate_qa(CHUNKS[:2], llm, QASettings(validation=ValidationSettings(duplicate_similarity=0.7)),
                               existing_questions=["who forged the sampo"]))
    first, second = results
    assert [p.question for p in first.kept] == ["Who compiled the Kalevala?", "What is Kalevala Day?"]
    assert len(first.removed) == 2 and all(p.removed.startswith("duplicate of") for p in first.removed)
    assert "'who forged the sampo'" in first.removed[1].removed
    assert not second.kept and len(second.removed) == 4, "a later batch repeating earlier pairs keeps nothing"
    summary = summarize(results)
    assert (summary.made, summary.kept, summary.duplicates) == (8, 2, 6)
    assert len(failure_rows(results)) == 6, "every removed pair is written out with its reason"


def test_later_rounds_show_the_questions_already_made():
    llm = ScriptedLLM(grounded_pairs)
    list(generate_qa(CHUNKS[:2], llm, QASettings(batches=4)))
    assert len(llm.requests) == 4
    first_round, second_round = llm.requests[:2], llm.requests[2:]
    assert all("already written" not in r.messages[-1]["content"] for r in first_round)
    for request in second_round:
        chunk = chunk_of(request)
        assert "already written" in request.messages[-1]["content"]
        assert f"What does part {chunk.chunk_id} say, point 0" in request.messages[-1]["content"]


def test_plan_spreads_fewer_batches_over_the_source_and_wraps_for_more():
    thirds = [0, round(len(CHUNKS) / 3), round(2 * len(CHUNKS) / 3)]
    assert [c.chunk_id for c in next(plan_batches(CHUNKS, 3))] == thirds
    rounds = list(plan_batches(CHUNKS[:4], 10))
    assert [len(r) for r in rounds] == [4, 4, 2]
    assert list(plan_batches([], 5)) == []


def test_several_batches_are_in_flight_at_once_for_a_remote_backend():
    in_flight, peak, lock, three_running = [0], [0], threading.Lock(), threading.Event()

    def slow(request, n):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] == 3:
                three_running.set()
        three_running.wait(timeout=5)  # hold each request until three overlap (or give up)
        with lock:
            in_flight[0] -= 1
        return grounded_pairs(request, n)

    results = list(generate_qa(CHUNKS[:6], ScriptedLLM(slow, max_in_flight=3)))
    assert peak[0] == 3, "never more than the limit, and the limit is reached"
    assert sorted(r.number for r in results) == list(range(1, 7))


def test_stopping_keeps_the_batches_already_made():
    stop = threading.Event()
    made = []
    for result in generate_qa(CHUNKS[:5], ScriptedLLM(grounded_pairs), should_stop=stop.is_set):
        made.append(result)
        if len(made) == 2:
            stop.set()
    assert len(made) == 2 and all(r.kept for r in made)


def test_off_topic_redirects_are_added_after_the_batches():
    results = list(generate_qa(CHUNKS[:1], ScriptedLLM(grounded_pairs),
                               QASettings(off_topic=4, topic="the Kalevala")))
    off_topic = results[-1]
    assert off_topic.chunk is None and len(off_topic.kept) == 4
    assert all(p.kind == OFF_TOPIC and "the Kalevala" in p.answer for p in off_topic.kept)
    assert off_topic.kept[0].to_row()["provenance"]["kind"] == OFF_TOPIC


def test_judge_scores_and_flags_low_ones():
    def reply(request, n):
        if "Score each pair" in request.messages[-1]["content"]:
            return ('```json\n[{"id": 1, "score": 9, "reason": "supported"}, '
                    '{"id": 2, "score": "3/10", "reason": "made up"}]\n```')
        return pairs_json([("Where was Lönnrot born?", "In Sammatti."), ("Who was Lönnrot's wife?", "Queen Victoria.")])

    chunk = next(c for c in CHUNKS if "Sammatti" in c.text)
    [result] = generate_qa([chunk], ScriptedLLM(reply), QASettings(judge=True))
    good, bad = result.kept
    assert (good.judge_score, good.judge_reason, good.flags) == (9, "supported", [])
    assert bad.judge_score == 3 and LOW_JUDGE_SCORE in bad.flags and WEAKLY_GROUNDED in bad.flags


def test_an_unreadable_judgement_leaves_pairs_unscored_with_a_note():
    def reply(request, n):
        if "Score each pair" in request.messages[-1]["content"]:
            return "They all look fine to me."
        return pairs_json([("Who forged the Sampo?", "Ilmarinen.")])

    [result] = generate_qa(CHUNKS[:1], ScriptedLLM(reply), QASettings(judge=True))
    assert result.kept[0].judge_score is None
    assert "judge scored 0 of 1 pairs; the rest are unscored" in result.notes


@pytest.mark.parametrize("settings, message", [
    (QASettings(pairs_per_batch=5), "10-20"),
    (QASettings(pairs_per_batch=25), "10-20"),
    (QASettings(validation=ValidationSettings(duplicate_similarity=0)), "duplicate threshold"),
])
def test_settings_out_of_range_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        list(generate_qa(CHUNKS[:1], ScriptedLLM(grounded_pairs), settings))


# --- One door for both front ends: the backend and settings from a person's choices ---------------------------


@pytest.fixture
def own_machine(monkeypatch):
    for name in ("KANTELE_SHARED", "SYSTEM", "SPACE_ID", "KANTELE_ALLOWED_ENDPOINTS", "KANTELE_CAP_GENERATE_BATCHES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def shared_app(monkeypatch, own_machine):
    monkeypatch.setenv("KANTELE_SHARED", "1")


def test_the_defaults_are_the_local_model_and_the_default_settings(own_machine):
    backend, settings = prepare_generation(GenerationChoices())
    assert isinstance(backend, LocalBackend) and backend.model_name == "auto"
    assert settings == QASettings()


def test_a_uis_floats_and_empty_boxes_become_whole_numbers(own_machine):
    _, settings = prepare_generation(GenerationChoices(pairs_per_batch=12.0, batches=None, off_topic=None,
                                                       min_judge_score=7.0, duplicate_similarity=0.85))
    assert (settings.pairs_per_batch, settings.batches, settings.off_topic) == (12, 0, 0)
    assert settings.validation.min_judge_score == 7 and settings.validation.duplicate_similarity == 0.85


def test_the_settings_are_checked_before_the_backend(own_machine):
    with pytest.raises(ConfigError, match="10-20"):
        prepare_generation(GenerationChoices(backend=OPENAI_COMPATIBLE, pairs_per_batch=5))
    with pytest.raises(BackendError, match="give the endpoint's base URL"):
        prepare_generation(GenerationChoices(backend=OPENAI_COMPATIBLE, model="m"))


def test_remote_is_an_endpoint_with_a_base_url_else_inference_providers(own_machine):
    endpoint, _ = prepare_generation(GenerationChoices(backend=REMOTE, model="m", base_url="http://127.0.0.1:9/v1/",
                                                       in_flight=3.0))
    assert (endpoint.base_url, endpoint.max_in_flight) == ("http://127.0.0.1:9/v1", 3)
    providers, _ = prepare_generation(GenerationChoices(backend=REMOTE, model="m", api_key="hf_typed"))
    assert providers.base_url is None and providers._token == "hf_typed"


def test_the_sign_in_token_goes_to_inference_providers_only_and_a_typed_key_wins(own_machine):
    signed_in = {"model": "m", "signed_in_token": "hf_signed_in"}
    assert qa_backend(GenerationChoices(backend=PROVIDERS, **signed_in))._token == "hf_signed_in"
    assert qa_backend(GenerationChoices(backend=PROVIDERS, api_key=" hf_typed ", **signed_in))._token == "hf_typed"
    endpoint = qa_backend(GenerationChoices(backend=OPENAI_COMPATIBLE, base_url="http://127.0.0.1:9/v1", **signed_in))
    assert endpoint._token is None, "the endpoint gets no key rather than the sign-in token"


def test_keys_never_show_in_a_repr(own_machine):
    choices = GenerationChoices(backend=PROVIDERS, model="m", api_key="hf_typed", signed_in_token="hf_signed_in")
    assert "hf_typed" not in repr(choices) and "hf_signed_in" not in repr(choices)
    assert "hf_typed" not in repr(qa_backend(choices))


def test_an_unknown_backend_is_named(own_machine):
    with pytest.raises(BackendError, match="unknown backend 'gpt' -- use one of local, openai-compatible"):
        qa_backend(GenerationChoices(backend="gpt"))


def test_a_shared_app_keeps_its_guards_whichever_front_end_asks(shared_app, tmp_path):
    with pytest.raises(BackendError, match="not a public internet address"):
        prepare_generation(GenerationChoices(backend=REMOTE, model="m", base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ModelNameError, match="loads base models from the Hugging Face Hub only"):
        prepare_generation(GenerationChoices(model=str(tmp_path)))
    with pytest.raises(CapError, match="over this app's limit of 200"):
        prepare_generation(GenerationChoices(batches=201))
