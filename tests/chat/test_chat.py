"""Side-by-side answers from one base model with the adapter switched on and off."""

import pytest

from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
from tuning.models.loading import resolve_model

QUESTION = "Who compiled the Kalevala?"
SHORT = GenerationSettings(max_new_tokens=16)


@pytest.fixture(scope="module")
def chat(trained_run):
    return SideBySideChat.from_run(trained_run)


def test_adapter_on_and_off_answer_differently(chat):
    both = chat.answer_both(QUESTION, SHORT)
    assert both["base"] and both["tuned"]
    assert both["base"] != both["tuned"]


def test_one_base_model_in_memory(chat):
    from peft import PeftModel

    assert isinstance(chat.model, PeftModel)
    base_modules = [m for m in chat.model.modules() if type(m).__name__ == "LlamaForCausalLM"]
    assert len(base_modules) == 1


def test_greedy_is_deterministic_and_batches_keep_question_order(chat):
    questions = [QUESTION, "What is the Sampo?", "Who rules Pohjola?"]
    batched = chat.answer_many(questions, adapter_on=True, settings=SHORT)
    assert batched == chat.answer_many(questions, adapter_on=True, settings=SHORT)
    assert len(batched) == 3 and all(batched)
    # Left padding changes the 4-bit arithmetic slightly, so a padded batch may word an answer
    # differently from a lone question; the longest prompt has no padding and must match exactly.
    longest = max(range(3), key=lambda i: len(chat.fit(questions[i]).ids))
    assert batched[longest] == chat.answer(questions[longest], adapter_on=True, settings=SHORT)


def test_stream_yields_growing_text_ending_in_the_full_answer(chat):
    pieces = list(chat.stream(QUESTION, adapter_on=True, settings=SHORT))
    assert len(pieces) > 1
    assert all(b.startswith(a) for a, b in zip(pieces, pieces[1:]))
    assert pieces[-1].strip() == chat.answer(QUESTION, adapter_on=True, settings=SHORT)


def test_both_answers_come_from_one_batched_generate_and_equal_the_single_ones(chat):
    pairs = list(chat.stream_both(QUESTION, QUESTION, settings=SHORT))
    assert len(pairs) > 1
    assert all(b[0].startswith(a[0]) and b[1].startswith(a[1]) for a, b in zip(pairs, pairs[1:]))
    # Same prompt in both rows: no padding, so each row is exactly what that side says alone.
    assert pairs[-1][0].strip() == chat.answer(QUESTION, adapter_on=False, settings=SHORT)
    assert pairs[-1][1].strip() == chat.answer(QUESTION, adapter_on=True, settings=SHORT)


def test_both_panes_keep_their_own_history(chat):
    """The panes' conversations differ after the first turn; the longer one is unpadded and must match."""
    base_turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "I don't know."},
                  {"role": "user", "content": "Who rules Pohjola?"}]
    tuned_turns = [{"role": "user", "content": QUESTION},
                   {"role": "assistant", "content": "Elias Lönnrot compiled the Kalevala from folk poems."},
                   {"role": "user", "content": "Who rules Pohjola?"}]
    *_, (base, tuned) = chat.stream_both(base_turns, tuned_turns, settings=SHORT)
    assert base and tuned
    assert tuned.strip() == chat.answer(tuned_turns, adapter_on=True, settings=SHORT)


def test_sampling_settings_are_used():
    kwargs = GenerationSettings(temperature=0.7, top_k=20, top_p=0.9).generate_kwargs(pad_token_id=0)
    assert kwargs["do_sample"] and kwargs["temperature"] == 0.7 and kwargs["top_k"] == 20
    assert GenerationSettings().generate_kwargs(pad_token_id=0)["do_sample"] is False


def test_without_an_adapter_the_tuned_side_says_what_to_do():
    from tuning.config import ModelConfig

    chat = SideBySideChat(resolve_model("embedded"), ModelConfig(load_in_4bit=False))
    assert chat.answer(QUESTION, adapter_on=False, settings=GenerationSettings(max_new_tokens=4))
    with pytest.raises(ValueError, match="no adapter loaded"):
        chat.answer(QUESTION, adapter_on=True)


def next_token_logits(chat, adapter):
    import torch

    ids = torch.tensor([chat.fit(QUESTION).ids])
    with chat._generation_context(True, adapter), torch.inference_mode():
        return chat.model(input_ids=ids).logits[0, -1].float()


def test_a_request_pins_its_adapter_even_if_another_visitor_switched(chat, trained_run, tmp_path):
    """Visitor B attaching another adapter between A's 'select' and A's 'generate' must not answer for A."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuning.runs.files import ADAPTER_DIR

    other = get_peft_model(AutoModelForCausalLM.from_pretrained(chat.model_ref.path),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    other.save_pretrained(tmp_path / "other")
    mine = trained_run / ADAPTER_DIR
    expected = next_token_logits(chat, mine)
    chat.use_adapter(tmp_path / "other")  # visitor B
    assert not torch.allclose(next_token_logits(chat, None), expected, atol=1e-3)
    # Compared as logits, not generated text: a long greedy continuation can flip on float noise.
    assert torch.allclose(next_token_logits(chat, mine), expected, atol=1e-3)
    assert chat.adapter_dir == mine
