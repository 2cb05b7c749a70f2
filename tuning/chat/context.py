"""Fit a conversation into the model's context before it is answered: the oldest turns go first, and a
question too long on its own keeps its newest part. The prompt a model prefills is the cost one question
puts on the one shared chat model (a 70,000-character question held it for minutes), so it is cut here,
and the pane says what was left out."""

from __future__ import annotations

from dataclasses import dataclass

from tuning.data.chat_template import encode_prompt

# No tokenizer we serve makes one token out of more characters than this (English averages ~4), so cutting
# a message to budget x this many characters first loses nothing the token cut would keep, and keeps
# tokenizing a pasted 10 MB question cheap.
MAX_CHARS_PER_TOKEN = 16
FALLBACK_CONTEXT_TOKENS = 2_048  # a config that doesn't say its context (TinyLlama's)


@dataclass
class FittedPrompt:
    """The prompt's ids and what had to be left out to fit."""

    ids: list[int]
    budget: int
    dropped_turns: int = 0
    cut_question: bool = False

    @property
    def was_cut(self) -> bool:
        """True when the model does not see the whole conversation."""
        return bool(self.dropped_turns or self.cut_question)

    def note(self) -> str:
        """What was left out, for the pane; empty when nothing was."""
        parts = []
        if self.dropped_turns:
            parts.append(f"the {self.dropped_turns} oldest message{'' if self.dropped_turns == 1 else 's'} of this "
                         "conversation were left out")
        if self.cut_question:
            parts.append("only the end of the question was kept")
        if not parts:
            return ""
        return (f"The model reads at most {self.budget:,} tokens of conversation here: {' and '.join(parts)}. "
                "Clear the chat to start afresh, or ask a shorter question.")


def context_tokens(model) -> int:
    """How many tokens the model attends over (its config's max_position_embeddings)."""
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or FALLBACK_CONTEXT_TOKENS)


def prompt_budget(model, max_new_tokens: int, cap: int | None = None) -> int:
    """Tokens the prompt may take: the context less room for the answer, and at most `cap` (a shared app's)."""
    budget = max(1, context_tokens(model) - max_new_tokens)
    return min(budget, cap) if cap else budget


def fit_prompt(tokenizer, messages: list[dict], budget: int) -> FittedPrompt:
    """The prompt ids of messages within budget tokens: a leading system turn is kept, then the oldest
    turns are dropped; if the newest message alone is still over, the start of its text is cut."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = [{**m, "content": m["content"][-budget * MAX_CHARS_PER_TOKEN:]} for m in messages[len(system):]]
    cut = any(len(m["content"]) < len(original["content"]) for m, original in zip(turns, messages[len(system):]))
    dropped = 0
    ids = encode_prompt(tokenizer, system + turns)
    while len(ids) > budget and len(turns) > 1:
        turns = turns[1:]
        dropped += 1
        while len(turns) > 1 and turns[0]["role"] != "user":  # a conversation starts with the user
            turns = turns[1:]
            dropped += 1
        ids = encode_prompt(tokenizer, system + turns)
    if len(ids) > budget:
        ids = _cut_last_message(tokenizer, system, turns[-1], budget)
        cut = True
    return FittedPrompt(ids=ids, budget=budget, dropped_turns=dropped, cut_question=cut)


def _cut_last_message(tokenizer, system: list[dict], message: dict, budget: int) -> list[int]:
    """The prompt with only the newest tokens of the one remaining message, within budget."""
    overhead = len(encode_prompt(tokenizer, system + [{**message, "content": ""}]))
    words = tokenizer(message["content"], add_special_tokens=False).input_ids
    keep = max(0, budget - overhead)
    while True:
        text = tokenizer.decode(words[len(words) - keep:] if keep else [], skip_special_tokens=True)
        ids = encode_prompt(tokenizer, system + [{**message, "content": text}])
        # Decoding and re-encoding can merge or split a token at the seam: shrink until it fits.
        if len(ids) <= budget or keep == 0:
            return ids[-budget:] if len(ids) > budget else ids
        keep -= max(1, len(ids) - budget)
