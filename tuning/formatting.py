"""Turn conversations into token ids with the model's own chat template.

Training and chat both go through `tokenizer.apply_chat_template`, never hand-written
tags: the seed project trained with ChatML tags and served with Zephyr tags, and the
tuned model quietly answered worse than it should have.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # label value the loss skips (prompt tokens, padding)


class TemplateError(ValueError):
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


def _render_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
    )


def encode_for_training(tokenizer, messages: list[dict], max_length: int) -> EncodedExample:
    """Ids of the whole conversation; labels mask everything but the assistant turns.

    Each assistant turn's span is found by rendering the conversation up to that turn
    with and without it: the template must render prefixes consistently (ChatML, Zephyr,
    Llama do), which is checked rather than assumed.
    """
    full = _render_ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:index], add_generation_prompt=True))
        through = _render_ids(tokenizer, messages[: index + 1], add_generation_prompt=False)
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
    return len(_render_ids(tokenizer, messages, add_generation_prompt=False))


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of a conversation ending with the cue for the assistant's next answer."""
    return _render_ids(tokenizer, messages, add_generation_prompt=True)
