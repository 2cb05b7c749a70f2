"""Turn conversations into token ids with the model's own chat template.

Training and chat both go through `tokenizer.apply_chat_template`, never hand-written
tags: the seed project trained with ChatML tags and served with Zephyr tags, and the
tuned model quietly answered worse than it should have.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuning.errors import KanteleError

IGNORE_INDEX = -100  # label value the loss skips (prompt tokens, padding)


class TemplateError(KanteleError, ValueError):
    """The chat template renders a conversation in a way we can't mask safely."""


@dataclass
class EncodedExample:
    """One conversation as ids, with labels only on the assistant's tokens."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Prepend the recipe's system turn when the conversation has none."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def bos_to_add(tokenizer) -> int | None:
    """The BOS id every rendered conversation must start with, or None when the tokenizer adds no BOS.

    A tokenizer that starts plain text with BOS (Llama 2, TinyLlama, Llama 3) belongs to a model that
    saw BOS first in every sequence it was trained on, and llama.cpp adds it to a GGUF's prompts
    (gguf_export writes this same decision); but chat templates such as TinyLlama's Zephyr one don't
    write it, and apply_chat_template tokenizes without special tokens. Training, chat, the scorecard
    and export all ask here, so they agree.
    """
    bos = tokenizer.bos_token_id
    probe = tokenizer("a")["input_ids"]
    return bos if bos is not None and len(probe) > 1 and probe[0] == bos else None


def _render_ids(tokenizer, messages: list[dict], add_generation_prompt: bool, bos: int | None) -> list[int]:
    ids = list(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
    )
    # Every render of a conversation, and of each prefix, gains the same one token, so the assistant
    # spans encode_for_training finds by prefix lengths shift with it.
    return [bos, *ids] if bos is not None and ids[:1] != [bos] else ids


def encode_for_training(tokenizer, messages: list[dict], max_length: int) -> EncodedExample:
    """Ids of the whole conversation; labels mask everything but the assistant turns.

    Each assistant turn's span is found by rendering the conversation up to that turn
    with and without it: the template must render prefixes consistently (ChatML, Zephyr,
    Llama do), which is checked rather than assumed.
    """
    bos = bos_to_add(tokenizer)
    full = _render_ids(tokenizer, messages, add_generation_prompt=False, bos=bos)
    labels = [IGNORE_INDEX] * len(full)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:index], add_generation_prompt=True, bos=bos))
        through = _render_ids(tokenizer, messages[: index + 1], add_generation_prompt=False, bos=bos)
        if full[: len(through)] != through or start > len(through):
            raise TemplateError(
                "the model's chat template renders a conversation differently from its prefix, so the "
                "assistant's tokens can't be masked -- use a model whose template is prefix-consistent"
            )
        labels[start : len(through)] = full[start : len(through)]
    truncated = len(full) > max_length
    return EncodedExample(input_ids=full[:max_length], labels=labels[:max_length], truncated=truncated)


def count_tokens(tokenizer, messages: list[dict]) -> int:
    """Tokens of a whole conversation as training reads it (before truncation): one render, no label masking,
    about half the time of encode_for_training on a 100,000-row upload."""
    return len(_render_ids(tokenizer, messages, add_generation_prompt=False, bos=bos_to_add(tokenizer)))


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of a conversation ending with the cue for the assistant's next answer."""
    return _render_ids(tokenizer, messages, add_generation_prompt=True, bos=bos_to_add(tokenizer))
