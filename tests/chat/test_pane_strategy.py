"""Both panes at once, by the strategy measured fastest on this machine: the choice follows the measured speeds
(faked), and a real two-pane answer streams under every strategy with the same greedy text per pane, from one
base model in memory. The scorecard's base and tuned batches likewise."""

import threading

import pytest
import torch

import tuning.chat.pane_strategy as pane_strategy
from tuning.chat.lora_scaling import lora_layers
from tuning.chat.pane_strategy import (
    BATCHED,
    CHAT_STRATEGIES,
    SCORECARD_STRATEGIES,
    SEQUENTIAL,
    THREADS,
    PaneTimings,
    choose_strategy,
)
from tuning.chat.side_by_side import GenerationSettings, Pass, SideBySideChat
from tuning.chat.side_threads import run_sides_at_once

QUESTION = "Who compiled the Kalevala?"
SHORT = GenerationSettings(max_new_tokens=16)


@pytest.fixture(scope="module")
def chat(trained_run):
    return SideBySideChat.from_run(trained_run)


@pytest.fixture
def strategy(chat):
    """Force a strategy on the module's chat for one test (put back after)."""
    def force(name: str) -> SideBySideChat:
        chat.strategy_override = name
        return chat

    yield force
    chat.strategy_override = None


@pytest.mark.parametrize(("both", "chosen"), [
    ({BATCHED: 7.4, THREADS: 9.1}, BATCHED),  # the developers' machine: a batch of 2 cost 1.09x one row
    ({BATCHED: 13.7, THREADS: 7.9}, THREADS),  # an AMD EPYC: batch of 2 at 1.65x, two one-core streams 1.38x
    ({BATCHED: 8.0, THREADS: 7.8}, BATCHED),  # a tie: the default stays
    ({SEQUENTIAL: 60.0, THREADS: 41.0}, THREADS),  # the scorecard, where base and tuned at once won
    ({SEQUENTIAL: 52.0, THREADS: 58.0}, SEQUENTIAL),
])
def test_the_strategy_follows_the_measured_speeds(both, chosen):
    timings = PaneTimings(rows=1, single=5.7, both=both)
    assert choose_strategy(timings) == chosen == timings.choice()
    assert f"{timings.ratio(chosen):.2f}× one answer's time, measured here" in timings.summary()
    assert choose_strategy(None) == BATCHED and choose_strategy(None, SEQUENTIAL) == SEQUENTIAL
    assert not pane_strategy.can_run_side_by_side(is_gpu=True)  # a GPU always batches: nothing is timed there


@pytest.mark.parametrize("name", CHAT_STRATEGIES)
def test_both_panes_stream_at_once_with_each_panes_own_greedy_answer(chat, strategy, name):
    pairs = list(strategy(name).stream_both(QUESTION, QUESTION, settings=SHORT))
    assert len(pairs) > 2
    assert all(b[0].startswith(a[0]) and b[1].startswith(a[1]) for a, b in zip(pairs, pairs[1:]))
    base, tuned = pairs[-1]
    assert base.strip() == chat.answer(QUESTION, adapter_on=False, settings=SHORT)
    assert tuned.strip() == chat.answer(QUESTION, adapter_on=True, settings=SHORT)
    # Visibly at once: both panes had text while neither was finished.
    assert any(b and t and b != base and t != tuned for b, t in pairs)


def test_every_strategy_gives_the_same_two_answers(chat, strategy):
    answers = {name: list(strategy(name).stream_both(QUESTION, "What is the Sampo?", settings=SHORT))[-1]
               for name in CHAT_STRATEGIES}
    assert answers[BATCHED][1] and answers[THREADS][0]
    # The tuned pane's prompt is the longer one: unpadded in the batch, so every strategy must match exactly.
    assert answers[BATCHED][1] == answers[THREADS][1]


@pytest.mark.parametrize("name", SCORECARD_STRATEGIES)
def test_the_scorecard_answers_both_sides_by_each_strategy(chat, strategy, name):
    questions = [QUESTION, "What is the Sampo?", "Who rules Pohjola?"]
    base, tuned = strategy(name).answer_both_many(questions, settings=SHORT, batch_size=2)
    assert base == chat.answer_many(questions, adapter_on=False, settings=SHORT, batch_size=2)
    assert tuned == chat.answer_many(questions, adapter_on=True, settings=SHORT, batch_size=2)
    assert base != tuned


@pytest.mark.parametrize("name", SCORECARD_STRATEGIES)
def test_the_probes_passes_each_get_their_own_sides_answers_by_each_strategy(chat, strategy, name):
    """answer_passes: base passes on one side, tuned passes on the other, each in order (at once by THREADS), each
    pass answered as answer_many would, with its own batch size and settings."""
    first, second = [QUESTION, "What is the Sampo?", "Who rules Pohjola?"], ["Who is Louhi?"]
    passes = [Pass(first, False, SHORT, 2), Pass(second, False, SHORT), Pass(first, True, SHORT, 3),
              Pass(second, True, GenerationSettings(max_new_tokens=4))]
    done = strategy(name).answer_passes(passes)
    for one, result in zip(passes, done, strict=True):
        assert result.answers == chat.answer_many(one.questions, adapter_on=one.adapter_on, settings=one.settings,
                                                  batch_size=one.batch_size)
        assert result.started <= result.ended
    assert done[0].ended <= done[1].started and done[2].ended <= done[3].started  # a side keeps its order
    assert done[0].answers != done[2].answers


def test_one_base_model_serves_both_threads_and_the_base_pane_skips_the_adapter(chat, strategy):
    """No second copy: the threads share every weight. The base pane's thread never runs a LoRA layer's
    update (it is skipped, not scaled by 0); the tuned pane's runs every one."""
    weights = {p.data_ptr() for p in chat.model.parameters()}
    layers = lora_layers(chat.model, "tuned")
    calls: dict[str, int] = {}

    def count(module, args):
        name = threading.current_thread().name
        calls[name] = calls.get(name, 0) + 1

    hooks = [layer.lora_A["tuned"].register_forward_pre_hook(count) for layer in layers]
    try:
        pairs = list(strategy(THREADS).stream_both(QUESTION, QUESTION, settings=SHORT))
    finally:
        for hook in hooks:
            hook.remove()
    assert {p.data_ptr() for p in chat.model.parameters()} == weights
    assert pairs[-1][0].strip() == chat.answer(QUESTION, adapter_on=False, settings=SHORT)
    # One thread ran the adapter on every layer at every step (prompt + up to 16 tokens); the other, never.
    assert len(calls) == 1 and next(iter(calls.values())) % len(layers) == 0
    assert not any(bool(layer._disable_adapters) for layer in layers)  # the flags are back, adapter on


def test_each_side_runs_on_one_core_and_the_thread_count_comes_back(chat):
    before = torch.get_num_threads()
    layer = lora_layers(chat.model, "tuned")[0]
    seen, adapter_off = {}, {}

    def side(name):
        def run():
            seen[name] = torch.get_num_threads()
            adapter_off[name] = bool(layer.disable_adapters)
        return run

    run_sides_at_once(chat.model, "tuned", [side("base"), side("tuned")], adapter_on=[False, True])
    assert seen == {"base": 1, "tuned": 1} and adapter_off == {"base": True, "tuned": False}
    assert torch.get_num_threads() == before and layer.disable_adapters is False

    with pytest.raises(ValueError, match="side failed"):
        run_sides_at_once(chat.model, "tuned", [lambda: None, lambda: (_ for _ in ()).throw(ValueError("side failed"))],
                          [False, True])
    assert torch.get_num_threads() == before and layer.disable_adapters is False


def test_the_measurement_is_taken_once_and_shown(trained_run, monkeypatch, tmp_path):
    """For real: the strategies are timed on this machine's model (cache in a temp folder), then remembered."""
    monkeypatch.setattr(pane_strategy._timings, "path", lambda: tmp_path / pane_strategy.CACHE_FILE)
    pane_strategy.forget_timings()
    if not pane_strategy.can_run_side_by_side(is_gpu=False):
        pytest.skip("a 1-core machine always batches")
    fresh = SideBySideChat.from_run(trained_run)
    timings = fresh.pane_strategy()
    assert set(timings.both) == set(CHAT_STRATEGIES) and timings.single > 0 and timings.rows == 1
    assert (tmp_path / pane_strategy.CACHE_FILE).is_file()
    calls = []
    monkeypatch.setattr("tuning.chat.side_by_side.measure_strategies", lambda *args: calls.append(args))
    pane_strategy.forget_timings()
    again = SideBySideChat.from_run(trained_run)
    assert again.pane_strategy() == timings and not calls  # read from the file, not measured again
    pane_strategy.forget_timings()


def test_two_visitors_never_answer_with_each_others_switch(chat, strategy):
    """The base pane's "adapter off" is its thread's own: a concurrent reader on another thread sees the
    adapter on, and the model-wide switch (a base-only answer's `disable_adapter()`) still shows through."""
    layer = lora_layers(chat.model, "tuned")[0]
    inside, release, outside = threading.Event(), threading.Event(), []

    def side():
        inside.set()
        release.wait(5)

    worker = threading.Thread(target=lambda: run_sides_at_once(chat.model, "tuned", [side], [False]))
    worker.start()
    inside.wait(5)
    outside.append(bool(layer.disable_adapters))
    release.set()
    worker.join()
    assert outside == [False]
    with chat.model.disable_adapter():
        run_sides_at_once(chat.model, "tuned", [lambda: outside.append(bool(layer.disable_adapters))], [True])
    assert outside == [False, True] and layer.disable_adapters is False
