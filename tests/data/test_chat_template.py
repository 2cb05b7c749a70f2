"""Chat-template tokenization: labels cover the assistant's tokens only, for any number of turns."""

import pytest

from tuning.data.chat_template import (
    IGNORE_INDEX,
    encode_for_training,
    encode_prompt,
    with_system_prompt,
)
from tuning.models.loading import load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("embedded").path)


def labelled_text(tokenizer, example):
    return tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])


def test_only_the_answer_and_its_end_token_are_learned(tokenizer):
    messages = [{"role": "user", "content": "Who compiled the Kalevala?"},
                {"role": "assistant", "content": "Elias Lönnrot."}]
    example = encode_for_training(tokenizer, messages, max_length=512)
    assert labelled_text(tokenizer, example).strip() == "Elias Lönnrot.<|im_end|>"
    assert example.input_ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert not example.truncated


def test_every_assistant_turn_is_learned_and_no_user_turn(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Who forged the Sampo?"},
                {"role": "assistant", "content": "Ilmarinen."},
                {"role": "user", "content": "For whom?"},
                {"role": "assistant", "content": "For Louhi."}]
    text = labelled_text(tokenizer, encode_for_training(tokenizer, messages, max_length=512))
    assert "Ilmarinen." in text and "For Louhi." in text
    assert "Sampo" not in text and "whom" not in text and "brief" not in text


def test_truncation_keeps_max_length_and_says_so(tokenizer):
    messages = [{"role": "user", "content": "Tell me everything."},
                {"role": "assistant", "content": "word " * 200}]
    example = encode_for_training(tokenizer, messages, max_length=50)
    assert len(example.input_ids) == len(example.labels) == 50
    assert example.truncated


def test_prompt_ends_with_the_assistant_cue(tokenizer):
    ids = encode_prompt(tokenizer, [{"role": "user", "content": "Hi"}])
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_system_prompt_is_added_only_when_missing():
    user = [{"role": "user", "content": "Hi"}]
    assert with_system_prompt(user, "S")[0] == {"role": "system", "content": "S"}
    own = [{"role": "system", "content": "mine"}, *user]
    assert with_system_prompt(own, "S") == own
    assert with_system_prompt(user, None) == user


def test_the_cheap_token_count_equals_the_training_encoding(tokenizer):
    from tuning.data.chat_template import count_tokens, encode_for_training

    for messages in CONVERSATIONS_FOR_COUNTING:
        assert count_tokens(tokenizer, messages) == len(encode_for_training(tokenizer, messages, 10**9).input_ids)


CONVERSATIONS_FOR_COUNTING = [
    [{"role": "user", "content": "Who compiled the Kalevala?"}, {"role": "assistant", "content": "Elias Lönnrot."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Who is Aino?"},
     {"role": "assistant", "content": "Joukahainen's sister."}],
]
